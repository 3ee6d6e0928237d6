"""A fleet run with output storage (the local Azure's Azurite): every byte of output comes back
from the append blobs, streamed line by line while the run goes, not just the instance view's
last 4 KB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from azrun.fleet import Fleet, FleetOptions, PollPolicy, RecordingObserver
from azrun.models import RunSpec, TargetState
from azrun.targets import Selector

LINES = 3000  # `seq 1 3000` is 13,893 bytes: far past the instance view's 4 KB


async def test_full_output_comes_back_through_the_blobs(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], tmp_path: Path
) -> None:
    from azrun.clients import ClientFactory
    from azrun.output import OutputStore, target_path

    env = azure_env(local_azure)
    factory = ClientFactory.from_env()
    store = await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
                                   connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"])
    obs = RecordingObserver()
    opts = FleetOptions.make(poll=PollPolicy(min_first_s=0.3, initial_guess_s=0.5, max_interval_s=1.0))
    expected = "".join(f"{i}\n" for i in range(1, LINES + 1))
    try:
        async with Fleet(factory=factory, state_dir=tmp_path / "state", output=store,
                         default_subscriptions=(env["AZURE_SUBSCRIPTION_ID"],)) as fleet:
            result = await fleet.run(Selector.from_options(tags=["role=web"]),
                                     RunSpec(script=f"seq 1 {LINES}; echo warn >&2", timeout_s=60),
                                     options=opts, observer=obs)
            rows = fleet.status(result.run_id).targets
            web01 = next(r.target for r in result.results if r.target.name == "vm-web-01")
            blob = await store.read(result.run_id, web01, "stdout")
    finally:
        await store.aclose()
        await factory.aclose()
    ran = [r for r in result.results if r.state is not TargetState.SKIPPED]
    assert len(ran) == 4 and all(r.state is TargetState.SUCCEEDED for r in ran)
    assert [r.target.name for r in result.results if r.state is TargetState.SKIPPED] == ["vm-web-stopped"]
    for r in ran:
        assert r.output.stdout_url and r.output.stdout_url.endswith(f"{result.run_id}/{target_path(r.target)}/stdout")
        assert "?" not in r.output.stdout_url  # never a SAS in a result
        assert r.output.stdout_bytes == len(expected) and r.output.stderr_bytes == len("warn\n")
        assert not r.output.truncated
        assert r.stdout_tail.splitlines()[-1] == str(LINES) and r.stderr_tail == "warn"
        lines = [line for name, stream, line in obs.lines if name == r.target.name and stream == "stdout"]
        assert lines == [str(i) for i in range(1, LINES + 1)]  # every line, in order, once
    assert blob.decode() == expected
    assert all(row.stdout_url and "sig=" not in row.stdout_url for row in rows if row.state is TargetState.SUCCEEDED)
