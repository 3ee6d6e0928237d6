"""One managed run command on one machine: build it, submit it, read it, delete it.

Everything fleet-wide (concurrency, budgets, scheduling) lives in :mod:`azrun.fleet`; this
package only knows the wire, over the aio Compute client from :class:`azrun.clients.ClientFactory`.

Choices, each answering a known Azure trap (azure-facts §1-2, peers §3):

* **Unique names.** Every run uses ``azrun-<run id>``; a same-name re-PUT may not re-execute.
  The resource is tagged ``{"azrun-run": <run id>}`` so :func:`is_azrun_run_command` (name
  prefix AND tag) recognises azrun's own and cleanup never touches anyone else's.
* **No hidden failures.** ``treatFailureAsDeploymentFailure`` is always set, and the exit code
  is always checked: ``Succeeded`` with a non-zero exit code is still a failure.
* **Cheap submit.** ``begin_create_or_update(..., polling=False)`` sends the PUT only: with
  ``asyncExecution`` the LRO would finish as soon as the script starts anyway, and the fleet's
  scheduled ``GET $expand=instanceView`` polls are the single source of completion.
* **Timeouts the real Linux handler way.** It reports ``Failed`` / exitCode -1 /
  "...exit status=-1" when it kills a script at ``timeoutInSeconds``; :func:`looks_timed_out`
  turns that into ``TimedOut`` when the run lasted (about) the timeout.
* **Tolerant states.** ``executionState`` is ``modelAsString``: unknown values are kept as text
  and treated as "not finished yet" (the watchdog bounds how long that can last).
* **Errors per target, not per fleet.** :func:`azrun.azerrors.classify` (also exported here as
  ``classify_error``) turns SDK exceptions into an :class:`~azrun.errors.AzureFailure` (alias
  ``ArmFailure``: conflict, not allowed, forbidden with the RBAC action, not found, outcome
  unknown, ...) that the fleet maps onto target states; secrets never reach its message.
* **A failed PUT says whether it may have landed.** :meth:`RunCommandClient.submit` raises
  :class:`~azrun.errors.SubmitNotSent` when no attempt can have been applied (nothing left the
  client, or ARM answered 4xx) and :class:`~azrun.errors.SubmitOutcomeUnknown` when one may have
  (a 5xx, a timeout or a reset after sending): then GET the run command before any new PUT.

The package, one idea per module: :mod:`._names` (run ids, names, tag, machine paths),
:mod:`._body` (the PUT body and its size check), :mod:`._view` (reading and interpreting a run
command), :mod:`._client` (the wire). Import everything from ``azrun.runcommand``.
"""

from __future__ import annotations

from azrun.azerrors import classify
from azrun.errors import AzureFailure, FailureKind
from azrun.runcommand._body import (
    BLOB_URI_ALLOWANCE,
    MAX_BODY_BYTES,
    BlobTargets,
    WriteTargets,
    body_size,
    build_run_command,
    check_request_size,
)
from azrun.runcommand._client import (
    PutAttempts,
    RequestCounter,
    RunCommandClient,
    RunCommandInfo,
    submit_error,
)
from azrun.runcommand._names import (
    RUN_COMMAND_PREFIX,
    RUN_TAG,
    MachinePath,
    is_azrun_run_command,
    new_run_id,
    run_command_name,
)
from azrun.runcommand._view import TIMEOUT_SLACK_S, Outcome, RunCommandView, interpret, looks_timed_out

#: Old names, kept for callers written before :mod:`azrun.azerrors` owned the translation.
ArmFailure = AzureFailure
classify_error = classify

__all__ = [
    "BLOB_URI_ALLOWANCE",
    "MAX_BODY_BYTES",
    "RUN_COMMAND_PREFIX",
    "RUN_TAG",
    "TIMEOUT_SLACK_S",
    "ArmFailure",
    "AzureFailure",
    "BlobTargets",
    "FailureKind",
    "MachinePath",
    "Outcome",
    "PutAttempts",
    "RequestCounter",
    "RunCommandClient",
    "RunCommandInfo",
    "RunCommandView",
    "WriteTargets",
    "body_size",
    "build_run_command",
    "check_request_size",
    "classify",
    "classify_error",
    "interpret",
    "is_azrun_run_command",
    "looks_timed_out",
    "new_run_id",
    "run_command_name",
    "submit_error",
]
