"""The library as an async caller (a Function, a runbook) uses it: typed events from
``handle.events()``, the cancellation contract (cancel = detach, and the ledger agrees), typed
options, and docstrings on everything ``azrun`` exports. Against the local Azure."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import azrun
from azrun.ledger import Ledger


async def test_events_tell_each_targets_story_and_end_with_the_summary(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]]
) -> None:
    azure_env(local_azure)
    seen: list[Any] = []
    async with azrun.Fleet.from_env() as fleet:
        handle = await fleet.start(azrun.Selector.from_options(tags=["role=web"]),
                                   azrun.RunSpec(script="echo one; echo two >&2", timeout_s=60))  # fmt: skip
        async for event in handle.events():
            seen.append(event)
        result = await handle.wait()
    assert isinstance(seen[-1], azrun.RunSummary) and seen[-1].result == result and seen[-1].status == "succeeded"
    ran = [r.target.name for r in result.succeeded]
    assert len(ran) == 4
    for name in ran:  # per target: dispatched, then running, then its lines, then finished
        mine = [e for e in seen if getattr(e, "target", None) is not None and e.target.name == name]
        kinds = [type(e).__name__ for e in mine]
        assert kinds[0] == "TargetDispatched" and kinds[-1] == "TargetFinished", kinds
        assert kinds.index("TargetRunning") < kinds.index("TargetFinished")
        lines = {(e.stream, e.line) for e in mine if isinstance(e, azrun.OutputLine)}
        assert lines == {("stdout", "one"), ("stderr", "two")}
        finished = mine[-1]
        assert isinstance(finished, azrun.TargetFinished) and finished.result.state is azrun.TargetState.SUCCEEDED
    # the stopped machine was Skipped when the run was recorded: no events, but in the summary
    assert [r.target.name for r in result.results if r.state is azrun.TargetState.SKIPPED] == ["vm-web-stopped"]


async def test_cancelling_the_awaiting_task_detaches_and_the_ledger_agrees(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]]
) -> None:
    """The contract in azrun/fleet/_handle.py: cancel = detach. The scripts keep running, the run
    is ``interrupted`` with its targets Running (not Canceled), and a resume finishes it once."""
    azure_env(local_azure)
    spec = azrun.RunSpec(script='echo "start"; sleep 3; echo "end"', timeout_s=60)
    async with azrun.Fleet.from_env() as fleet:
        task = asyncio.create_task(fleet.run(azrun.Selector.from_options(tags=["role=web"]), spec))
        run_id = None
        for _ in range(100):  # until every target runs
            await asyncio.sleep(0.1)
            runs = fleet.runs(1)
            if runs and fleet.ledger.counts(runs[0].id).get("Running") == 4:
                run_id = runs[0].id
                break
        assert run_id is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with Ledger.open(fleet.ledger.path.parent) as ledger:
            assert ledger.run_status(run_id) == "interrupted"
            assert ledger.counts(run_id) == {"Running": 4, "Skipped": 1}  # nothing canceled, nothing lost
        result = await fleet.resume(run_id, spec)
    assert result.counts() == {"Succeeded": 4, "Skipped": 1}
    for r in result.succeeded:  # the scripts were never killed: each ran once, to its end
        assert r.stdout_tail.count("start") == 1 and r.stdout_tail.count("end") == 1


def test_fleet_run_takes_typed_options_only() -> None:
    for func in (azrun.Fleet.run, azrun.Fleet.start, azrun.run):
        kinds = {p.kind for p in inspect.signature(func).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, func
    assert "max_concurrency" in inspect.signature(azrun.run).parameters


def test_the_public_surface_is_documented() -> None:
    import importlib.resources

    assert importlib.resources.files("azrun").joinpath("py.typed").is_file()
    missing = []
    for name in azrun.__all__:
        if name == "__version__":
            continue
        obj = getattr(azrun, name)
        if not (getattr(obj, "__doc__", None) or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = member.__func__ if isinstance(member, classmethod | staticmethod) else member
                if (inspect.isfunction(fn) or isinstance(fn, property)) and not (fn.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, f"no docstring: {', '.join(missing)}"
