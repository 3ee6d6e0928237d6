"""The run command's PUT body, built from a :class:`~azrun.models.RunSpec`, and the size check
that refuses a body Azure would refuse (no I/O).

**Size.** No Microsoft source states a limit on a managed run command's inline script or on
the PUT body (searched: the run-command REST reference and how-to pages, ARM's limits, the
azure-cli/azure-powershell/azure-docs issue trackers; azure-facts and azure-recorded are
silent). ARM-fronted services commonly cap a request at 4 MiB (Storage documents exactly
4,194,304 bytes, ``RequestBodyTooLarge``), and the local Azure refuses a PUT body above
4,194,304 bytes with ``413 RequestEntityTooLarge`` (measured through the real SDK: a body of
4,194,304 bytes is accepted, one byte more is refused; a script of 4,194,098 ASCII characters is
the largest that fits a minimal body). azrun therefore checks the *serialised* body (JSON escapes
count: a newline costs 2 bytes, a non-ASCII character up to 12) against :data:`MAX_BODY_BYTES`
before anything is sent, leaving room for the per-target blob URIs (:data:`BLOB_URI_ALLOWANCE`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from azrun.errors import ConfigError
from azrun.models import RunSpec
from azrun.runcommand._names import RUN_TAG

__all__ = [
    "BLOB_URI_ALLOWANCE",
    "MAX_BODY_BYTES",
    "BlobTargets",
    "WriteTargets",
    "body_size",
    "build_run_command",
    "check_request_size",
]

#: The largest PUT body azrun sends (bytes, as serialised on the wire).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Room kept for one target's stdout + stderr blob URIs (SAS included) and its location.
BLOB_URI_ALLOWANCE = 8 * 1024


class WriteTargets(Protocol):
    """Where the agent writes stdout/stderr (``azrun.output.BlobPair`` has this shape)."""

    @property
    def stdout_write_uri(self) -> str: ...
    @property
    def stderr_write_uri(self) -> str: ...
    @property
    def identity(self) -> dict[str, str] | None: ...


@dataclass(frozen=True, slots=True)
class BlobTargets:
    """A plain :class:`WriteTargets`: write URIs (SAS, or plain for managed identity) and the
    ``RunCommandManagedIdentity`` body (``{}`` = system-assigned, ``{"clientId": ...}``; ``None``
    for SAS URIs)."""

    stdout_write_uri: str = field(repr=False)
    stderr_write_uri: str = field(repr=False)
    identity: dict[str, str] | None = None


def _identity_body(identity: str | None) -> dict[str, str]:
    if identity in (None, "", "system"):
        return {}
    return {"clientId": str(identity)}


def _source(spec: RunSpec) -> dict[str, Any]:
    if spec.script:
        return {"script": spec.script}
    if spec.script_uri:
        src: dict[str, Any] = {"scriptUri": spec.script_uri}
        if spec.script_uri_identity:
            src["scriptUriManagedIdentity"] = _identity_body(spec.script_uri_identity)
        return src
    return {"commandId": spec.command_id}


def build_run_command(
    spec: RunSpec, *, location: str, run_id: str, blobs: WriteTargets | None = None
) -> dict[str, Any]:
    """The PUT body. It carries secrets (protected parameters, password): never log it."""
    props: dict[str, Any] = {
        "source": _source(spec),
        "asyncExecution": spec.async_execution,
        "timeoutInSeconds": spec.timeout_s,
        "treatFailureAsDeploymentFailure": True,
    }
    if spec.parameters:
        props["parameters"] = [{"name": n, "value": v} for n, v in spec.parameters]
    if spec.protected_parameters:
        props["protectedParameters"] = [{"name": n, "value": v} for n, v in spec.protected_parameters]
    if spec.run_as_user:
        props["runAsUser"] = spec.run_as_user
        if spec.run_as_password:
            props["runAsPassword"] = spec.run_as_password
    if blobs is not None:
        props["outputBlobUri"] = blobs.stdout_write_uri
        props["errorBlobUri"] = blobs.stderr_write_uri
        if blobs.identity is not None:
            props["outputBlobManagedIdentity"] = dict(blobs.identity)
            props["errorBlobManagedIdentity"] = dict(blobs.identity)
    return {"location": location, "tags": {RUN_TAG: run_id}, "properties": props}


def body_size(body: dict[str, Any]) -> int:
    """Bytes ``body`` takes on the wire (azure-core sends ``json.dumps(body)``)."""
    return len(json.dumps(body).encode())


def check_request_size(spec: RunSpec) -> int:
    """Refuse, before any dispatch, a spec whose PUT body Azure would refuse; returns its size.

    Raises:
        ConfigError: the body (with room for a target's blob URIs) exceeds :data:`MAX_BODY_BYTES`.
    """
    size = body_size(build_run_command(spec, location="", run_id="20260101-0000-000000")) + BLOB_URI_ALLOWANCE
    if size > MAX_BODY_BYTES:
        what = f"the script {spec.script_name!r}" if spec.script_name and spec.script_name != "inline" else "the script"
        raise ConfigError(
            f"{what} is too large to send inline: the run command request would be {size:,} bytes, "
            f"more than the {MAX_BODY_BYTES:,} Azure accepts",
            hint="upload it to a blob and pass --script-uri URL (with --script-uri-identity for a private one)",
        )
    return size
