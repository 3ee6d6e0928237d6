"""The local ARM (Resources + Compute + subscriptions), one idea per module.

- ``app``: the request pipeline (faults, token, route, ARM buckets, RBAC, handler, log);
- ``admin``: the ``/_sim`` admin API (tests and benchmarks only);
- ``routes``: the URL table and api-version families;
- ``context``: what a handler gets (``Call``) and returns (``Reply``), shared lookups and paging;
- ``reads``: subscriptions, groups, VM / scale-set / instance listings, ``/resources``;
- ``filter``: the ``$filter`` dialects of those listings;
- ``runcmd``: managed run commands (body validation, PUT/PATCH/GET/LIST/DELETE, operations);
- ``runs``: the run-command and operation lifecycle behind those handlers;
- ``action``: the legacy ``runCommand`` action API;
- ``throttle``: ARM's and Compute's token buckets and their headers;
- ``errors``: ARM's error envelopes.
"""
