"""Machines with the same name in different resource groups (issue 14 item 2): each keeps its own
output blobs, live prefix, ``azrun logs`` lines and ``--download`` files.

The two ``vm-dup`` run one after the other (max concurrency 1): with one shared blob path the
second run's create-or-replace emptied the first machine's blob, deterministically.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from azrun.cli._print import StreamPrinter
from azrun.models import Target, TargetResult

SUB = "33333333-3333-4333-8333-333333333333"
FLEET = f"""
[sim]
current_vm = "rg-a/vm-dup"
agent_start_delay_s = 0.05
agent_upload_interval_s = 0.3
agent_status_interval_s = 0.2

[[subscription]]
id = "{SUB}"
name = "Namesakes"

  [[subscription.resource_group]]
  name = "rg-a"
  location = "westeurope"

    [[subscription.resource_group.vm]]
    name = "vm-dup"
    system_identity = true
    system_identity_storage_role = "contributor"
    tags = {{ role = "dup" }}

  [[subscription.resource_group]]
  name = "rg-b"
  location = "westeurope"

    [[subscription.resource_group.vm]]
    name = "vm-dup"
    tags = {{ role = "dup" }}
"""


class Printing:
    """A fleet observer printing streamed lines as the CLI does (lazy labels)."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.notes = io.StringIO()
        from azrun.cli._print import Labels

        self.printer = StreamPrinter(self.out, color=False, labels=Labels(note=self.notes))

    def on_target(self, result: TargetResult) -> None:
        pass

    def on_line(self, target: Target, stream: str, line: str) -> None:
        self.printer(target, stream, line)

    def on_progress(self, snapshot: Any) -> None:
        pass


async def test_same_named_machines_keep_their_own_output(
    sim_factory: Callable[..., Any],
    azure_env: Callable[[Any], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from azrun.cli import main
    from azrun.clients import ClientFactory
    from azrun.fleet import Fleet, FleetOptions, PollPolicy
    from azrun.models import RunSpec, TargetState
    from azrun.output import OutputStore
    from azrun.targets import Selector

    env = azure_env(sim_factory(FLEET, storage=True))
    factory = ClientFactory.from_env()
    store = await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
                                   connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"])  # fmt: skip
    obs = Printing()
    opts = FleetOptions.make(
        max_concurrency=1, poll=PollPolicy(min_first_s=0.2, initial_guess_s=0.3, max_interval_s=0.5)
    )
    script = 'echo "run $$"; echo "err $$" >&2'
    try:
        async with Fleet(factory=factory, state_dir=tmp_path / "state", output=store,
                         default_subscriptions=(SUB,)) as fleet:  # fmt: skip
            result = await fleet.run(Selector.from_options(tags=["role=dup"]), RunSpec(script=script, timeout_s=60),
                                     options=opts, observer=obs)  # fmt: skip
            blobs = {r.target.resource_group.lower(): await store.read(result.run_id, r.target, "stdout")
                     for r in result.results}  # fmt: skip
    finally:
        await store.aclose()
        await factory.aclose()
    assert [r.state for r in result.results] == [TargetState.SUCCEEDED] * 2
    urls = {r.output.stdout_url for r in result.results}
    assert len(urls) == 2, urls  # one blob per machine
    # each blob holds its own machine's one line, and the results' tails agree
    for r in result.results:
        own = blobs[r.target.resource_group.lower()].decode()
        assert own.count("run ") == 1 and own.strip() == r.stdout_tail
    assert blobs["rg-a"] != blobs["rg-b"]
    # live: two distinct prefixes, one line each, and a note saying which is which
    live = obs.out.getvalue().splitlines()
    outs = sorted(line for line in live if " run " in line)
    assert len(outs) == 2 and len({line.split("]")[0] for line in outs}) == 2, live
    assert "more than one machine is named vm-dup" in obs.notes.getvalue()

    # azrun logs: both machines, qualified by resource group
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["logs", result.run_id, "--state-dir", str(tmp_path / "state")]) == 0
    logged = capsys.readouterr().out
    for rg in ("rg-a", "rg-b"):
        assert f"[{rg}/vm-dup] (stdout) {blobs[rg].decode().strip()}" in logged.splitlines()
    # raw bytes need one machine: the name alone is ambiguous, rg/name is not
    args = ["logs", result.run_id, "--state-dir", str(tmp_path / "state"), "--stdout", "--target"]
    assert await asyncio.to_thread(main, [*args, "vm-dup"]) == 2  # usage: ambiguous
    assert "2 targets match" in capsys.readouterr().err
    assert await asyncio.to_thread(main, [*args, "RG-B/vm-dup"]) == 0
    assert capsys.readouterr().out.encode() == blobs["rg-b"]
    # --download: one file per machine
    dl = tmp_path / "dl"
    assert await asyncio.to_thread(
        main, ["logs", result.run_id, "--state-dir", str(tmp_path / "state"), "--download", str(dl)]
    ) == 0
    files = sorted(p.relative_to(dl).as_posix() for p in dl.rglob("*") if p.is_file())
    assert files == [f"{SUB}/{rg}/vm-dup/{s}" for rg in ("rg-a", "rg-b") for s in ("stderr", "stdout")]
    assert (dl / SUB / "rg-a" / "vm-dup" / "stdout").read_bytes() == blobs["rg-a"]
