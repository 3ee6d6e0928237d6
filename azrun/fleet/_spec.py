"""Rebuild a run's :class:`RunSpec` from the ledger for ``resume`` and ``rerun``.

The ledger keeps only :meth:`RunSpec.public_dict` (script hash, public parameters, names of the
protected ones): never a secret, and not the script body. What is missing comes back from the
caller (the same flags/env as ``run``) and is checked against what was recorded, so a resume
can never dispatch a different script or silently drop a protected parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azrun.config import DEFAULT_TIMEOUT_S
from azrun.errors import ConfigError
from azrun.models import RunSpec

__all__ = ["check_same_spec", "respec"]


def respec(
    public: Mapping[str, Any],
    *,
    run_id: str,
    script: str | None = None,
    script_uri: str | None = None,
    protected: Mapping[str, str] | None = None,
    run_as_password: str | None = None,
    password_required: bool = False,
    same_script: bool = True,
) -> RunSpec:
    """The spec of run ``run_id`` with the script / secrets supplied again.

    Raises:
        ConfigError: the script is missing or differs from the recorded one (sha256), or a
            protected parameter value / the run-as password is missing.
    """
    command_id = public.get("command_id")
    if not (script or script_uri or command_id):
        stored_uri = public.get("script_uri")
        if stored_uri:
            script_uri = str(stored_uri)
        else:
            raise ConfigError(
                f"run {run_id} needs its script again to dispatch the remaining targets",
                hint="pass the same --script FILE / --command TEXT / --script-uri URL as for the run",
            )
    values = dict(protected or {})
    missing = [n for n in public.get("protected_parameter_names", []) if not values.get(n)]
    if missing:
        raise ConfigError(
            f"run {run_id} needs the protected parameter value(s) again: {', '.join(missing)}",
            hint="protected values are never stored; give them as for the run (AZRUN_PARAM_<NAME>, "
            "--param-file or the prompt)",
        )
    if password_required and not run_as_password:
        raise ConfigError(
            f"run {run_id} needs the run-as password again",
            hint="use --run-as-password-env VAR or --run-as-password-file FILE (or answer the prompt)",
        )
    names = list(public.get("protected_parameter_names", []))
    spec = RunSpec(
        script=script,
        script_uri=None if script else script_uri,
        script_uri_identity=None,
        command_id=None if (script or script_uri) else command_id,
        parameters=tuple((str(n), str(v)) for n, v in public.get("parameters", [])),
        protected_parameters=tuple((n, values[n]) for n in names),
        run_as_user=public.get("run_as_user"),
        run_as_password=run_as_password if public.get("run_as_user") else None,
        timeout_s=int(public.get("timeout_s", DEFAULT_TIMEOUT_S)),
        async_execution=bool(public.get("async_execution", True)),
        script_name=str(public.get("script_name", "")),
    )
    check_same_spec(public, spec, run_id=run_id, same_script=same_script)
    return spec


def check_same_spec(public: Mapping[str, Any], spec: RunSpec, *, run_id: str, same_script: bool = True) -> None:
    """Refuse a spec whose script (unless ``same_script`` is off) or protected parameter names
    differ from the recorded run."""
    recorded = public.get("script_sha256")
    if same_script and recorded and recorded != spec.script_sha256:
        raise ConfigError(
            f"the script differs from run {run_id}'s (sha256 {spec.script_sha256[:12]} != {str(recorded)[:12]})",
            hint="resume with exactly the script the run started with, or start a new run",
        )
    names = sorted(public.get("protected_parameter_names", []))
    given = sorted(n for n, _ in spec.protected_parameters)
    if names != given:
        raise ConfigError(
            f"protected parameters differ from run {run_id}'s: recorded {names or 'none'}, given {given or 'none'}",
            hint="give the same protected parameters as the run",
        )
