"""Client-side throttling for ARM and Compute, so a fleet fan-out goes as fast as the published
limits allow and (almost) never sees a 429 (azure-facts §3).

This package is the one public path: import from ``azrun.throttle``, never from its modules.
One idea per module, each usable alone:

* ``bucket``: :class:`TokenBucket`, I/O-free token arithmetic (FIFO, cancellation-safe,
  thread- and multi-loop-safe); ``waiting``: :func:`acquire_all` / :func:`aacquire_all` over
  several buckets at once.
* ``adaptive``: :class:`AdaptiveBucket`, a bucket mirroring a server's bucket seen only through
  its answers (cold wave, hold until answered, in-flight bound, learned refill).
* ``limits``: :class:`ThrottleLimits`, :func:`classify` (method + URL -> :class:`RequestClass`),
  and the parsing of rate-limit headers, ``Retry-After`` and 429 bodies.
* ``registry``: :class:`Throttle`, the per-run registry of buckets (``begin`` / ``observe``).
* ``policies``: azure-core policies (:class:`ThrottlePolicy` / :class:`AsyncThrottlePolicy`,
  the throttle-aware retry twins) and :func:`client_kwargs` / :func:`aclient_kwargs`.

Twins follow one rule: ``name`` blocks, ``aname`` is the coroutine (``acquire``/``aacquire``,
``begin``/``abegin``, ``acquire_all``/``aacquire_all``, ``client_kwargs``/``aclient_kwargs``).
"""

from __future__ import annotations

from azrun.throttle.adaptive import AdaptiveBucket
from azrun.throttle.bucket import BucketStats, TokenBucket
from azrun.throttle.limits import (
    DELETE_VM,
    GET_OPERATION,
    HIGH_COST_GET,
    LOW_COST_GET,
    PUT_VM,
    UPDATE_VM,
    VMSS_VM_DELETE,
    VMSS_VM_GET,
    VMSS_VM_UPDATE,
    Limit,
    RequestClass,
    ThrottleLimits,
    classify,
    parse_remaining_resource,
    parse_retry_after,
)
from azrun.throttle.policies import (
    SCHEDULED_KEY,
    AsyncThrottleAwareRetryPolicy,
    AsyncThrottlePolicy,
    ThrottleAwareRetryPolicy,
    ThrottlePolicy,
    aclient_kwargs,
    client_kwargs,
)
from azrun.throttle.registry import InFlight, Throttle, ThrottleMetrics
from azrun.throttle.waiting import AsyncSleep, Clock, SyncSleep, aacquire_all, acquire_all

__all__ = [
    "DELETE_VM", "GET_OPERATION", "HIGH_COST_GET", "LOW_COST_GET", "PUT_VM", "SCHEDULED_KEY", "UPDATE_VM",
    "VMSS_VM_DELETE", "VMSS_VM_GET", "VMSS_VM_UPDATE", "AdaptiveBucket", "AsyncSleep", "AsyncThrottleAwareRetryPolicy",
    "AsyncThrottlePolicy", "BucketStats", "Clock", "InFlight", "Limit", "RequestClass", "SyncSleep", "Throttle",
    "ThrottleAwareRetryPolicy", "ThrottleLimits", "ThrottleMetrics", "ThrottlePolicy", "TokenBucket",
    "aacquire_all", "aclient_kwargs", "acquire_all", "classify", "client_kwargs", "parse_remaining_resource",
    "parse_retry_after",
]
