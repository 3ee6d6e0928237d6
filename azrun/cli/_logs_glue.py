"""What the CLI adds around ``azrun logs`` (whose body the output module owns): run ids as every
run command takes them (full, unique prefix, ``last``), the global options (``-o json``/``jsonl``
select its JSON lines), and "no such run" for an id neither the ledger nor the blobs know.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from azrun.cli._exit import NotFound
from azrun.cli._format import OutputFormat
from azrun.cli._globals import current, with_global_options
from azrun.cli._runids import NoSuchRun, complete_run_id, resolve_run_id
from azrun.errors import LedgerError, OutputError

__all__ = ["logs_entry"]


def _known_run(run_id: str | None, state_dir: Any) -> tuple[str | None, bool]:
    """(the full id, whether the ledger knows it); a prefix or ``last`` is resolved."""
    from azrun.cli._run_inputs import open_ledger

    try:
        with open_ledger(state_dir) as ledger:
            return resolve_run_id(ledger, run_id), True
    except (NoSuchRun, LedgerError):
        return run_id, False


def logs_entry(func: Callable[..., None]) -> Callable[..., None]:
    """``func`` (the logs command) with run-id resolution and the global options."""
    sig = inspect.signature(func, eval_str=True)

    @functools.wraps(func)
    def logs(**kwargs: Any) -> None:
        options = current()
        run_id, known = _known_run(kwargs.get("run_id"), kwargs.get("state_dir"))
        if kwargs.get("run_id") is not None or known:
            kwargs["run_id"] = run_id
        if options.output in (OutputFormat.JSON, OutputFormat.JSONL) and "json_lines" in kwargs:
            kwargs["json_lines"] = True
        try:
            func(**kwargs)
        except (OutputError, NotFound) as exc:
            if known or "no output blobs" not in exc.message:
                raise
            raise NoSuchRun(f"no such run {run_id!r}: not in the ledger, and no output blobs under {run_id}/",
                            hint="list runs with 'azrun runs' (or point --state-dir at the right ledger)") from exc

    params = []
    for p in sig.parameters.values():
        if p.name == "run_id":
            import typer

            p = p.replace(annotation=_with_completion(p.annotation, typer))
        params.append(p)
    logs.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    logs.__annotations__ = {p.name: p.annotation for p in params}
    return with_global_options(logs)


def _with_completion(annotation: Any, typer: Any) -> Any:
    """The run-id argument with run-id completion (the declaration stays in ``_logs``)."""
    from typing import get_args

    args = get_args(annotation)
    if len(args) == 2 and hasattr(args[1], "autocompletion"):
        args[1].autocompletion = complete_run_id
    return annotation
