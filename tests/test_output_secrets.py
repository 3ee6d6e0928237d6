"""A protected value a script echoes (issue 14 item 14): masked live, by ``azrun logs`` (text,
raw and ``--download``, files 0600), and never stored: the ledger keeps salted fingerprints."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SECRET = "Tr0ub4dor&3-horse-battery"


async def test_a_fleet_run_masks_an_echoed_secret_everywhere(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from azrun.cli import main
    from azrun.clients import ClientFactory
    from azrun.fleet import Fleet, FleetOptions, PollPolicy, RecordingObserver
    from azrun.models import RunSpec, TargetState
    from azrun.output import OutputStore
    from azrun.targets import Selector

    env = azure_env(local_azure)
    factory = ClientFactory.from_env()
    store = await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
                                   connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"])  # fmt: skip
    obs = RecordingObserver()
    opts = FleetOptions.make(poll=PollPolicy(min_first_s=0.2, initial_guess_s=0.3, max_interval_s=0.5))
    spec = RunSpec(script='echo "token is $APP_TOKEN."; echo "$APP_TOKEN" >&2', timeout_s=60,
                   protected_parameters=(("APP_TOKEN", SECRET),))  # fmt: skip
    state = tmp_path / "state"
    try:
        async with Fleet(factory=factory, state_dir=state, output=store,
                         default_subscriptions=(env["AZURE_SUBSCRIPTION_ID"],)) as fleet:  # fmt: skip
            result = await fleet.run(Selector.from_options(names=["vm-web-02"]), spec, options=opts, observer=obs)
            blob = await store.read(result.run_id, result.results[0].target, "stdout")
    finally:
        await store.aclose()
        await factory.aclose()
    assert result.results[0].state is TargetState.SUCCEEDED
    assert SECRET.encode() in blob  # the blob holds what the script wrote
    assert ("vm-web-02", "stdout", "token is ***.") in obs.lines  # live
    assert not any(SECRET.encode() in p.read_bytes() for p in state.rglob("*") if p.is_file())

    args = ["logs", result.run_id, "--state-dir", str(state)]
    assert await asyncio.to_thread(main, args) == 0
    assert capsys.readouterr().out.splitlines() == ["[vm-web-02] (stdout) token is ***.", "[vm-web-02] (stderr) ***"]
    assert await asyncio.to_thread(main, [*args, "--stdout"]) == 0
    assert capsys.readouterr().out == "token is ***.\n"
    dl = tmp_path / "dl"
    assert await asyncio.to_thread(main, [*args, "--download", str(dl)]) == 0
    files = [p for p in dl.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert all(SECRET.encode() not in p.read_bytes() and b"***" in p.read_bytes() for p in files)
