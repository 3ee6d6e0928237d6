"""End to end: real scripts run by the local Azure's guest agent write the blobs azrun prepared.

Run commands go through the simulator's ARM with the aio Compute SDK (what the fleet does); the
agent creates-or-replaces each blob and appends every 0.5 s (test fleet), with the SAS azrun minted
or with the VM's managed identity. Then ``azrun logs`` reads the same blobs back.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from azrun.cli._print import StreamPrinter
from azrun.clients import ClientFactory
from azrun.models import Target, TargetKind
from azrun.output import BlobPair, OutputStore, Tailer

SUB1 = "11111111-1111-4111-8111-111111111111"
SIG = re.compile(r"sig=(?!REDACTED)[^&\s\"']+")
TERMINAL = {"Succeeded", "Failed", "TimedOut", "Canceled"}


def _vm(name: str, rg: str, **kw: Any) -> Target:
    return Target(
        resource_id=f"/subscriptions/{SUB1}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name, kind=TargetKind.VM, subscription_id=SUB1, resource_group=rg, location="westeurope",
        os="linux", power_state="running", vm_name=name, **kw,
    )  # fmt: skip


def _client_id(identity: str) -> str:
    from azrun.sim.fleetspec import load_fleet

    spec = load_fleet(Path(__file__).resolve().parents[1] / "azrun" / "sim" / "fleets" / "test.toml")
    ident = spec.identity(SUB1, identity)
    assert ident is not None
    return ident.client_id


class Timed:
    """A sink recording each line with its arrival time (wall clock, like the script's ``date``)."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], list[str]] = {}
        self.arrivals: list[tuple[str, float]] = []

    def __call__(self, target: Target, stream: str, line: str) -> None:
        self.lines.setdefault((target.name, stream), []).append(line)
        self.arrivals.append((line, time.time()))


@pytest.fixture
def env(local_azure: Any, azure_env: Callable[[Any], dict[str, str]]) -> dict[str, str]:
    return azure_env(local_azure)


@pytest.fixture
async def factory(env: dict[str, str]) -> AsyncIterator[ClientFactory]:
    f = ClientFactory.from_env(env)
    f.polling_interval_s = 0.1
    yield f
    await f.aclose()


async def _run(factory: ClientFactory, target: Target, pair: BlobPair, script: str, name: str) -> Any:
    """PUT the run command (async execution) and return when its instance view is terminal."""
    compute = factory.acompute(target.subscription_id)
    props: dict[str, Any] = {
        "source": {"script": script},
        "asyncExecution": True,
        "timeoutInSeconds": 120,
        "outputBlobUri": pair.stdout_write_uri,
        "errorBlobUri": pair.stderr_write_uri,
    }
    if pair.identity is not None:
        props["outputBlobManagedIdentity"] = pair.identity
        props["errorBlobManagedIdentity"] = pair.identity
    body: Any = {"location": target.location, "properties": props}
    ops = compute.virtual_machine_run_commands
    poller = await ops.begin_create_or_update(target.resource_group, target.vm_name, name, body)
    await poller.result()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rc = await ops.get_by_virtual_machine(
            target.resource_group, target.vm_name, name, expand="instanceView"
        )
        iv = rc.instance_view
        if iv is not None and _state(iv) in TERMINAL:
            return iv
        await asyncio.sleep(0.2)
    raise AssertionError("run command did not finish")


def _state(iv: Any) -> str:
    state = iv.execution_state
    return str(getattr(state, "value", state))


async def _delete(factory: ClientFactory, target: Target, name: str) -> None:
    ops = factory.acompute(target.subscription_id).virtual_machine_run_commands
    poller = await ops.begin_delete(target.resource_group, target.vm_name, name)
    await poller.result()


SCRIPT = r"""
for i in 1 2 3 4; do
  echo "tick $i $(date +%s.%N)"
  sleep 1.1
done
printf 'naïve café 日本語 🎉\n'
echo "warning: disk 91% full" >&2
head -c 300000 /dev/zero | tr '\0' 'x' | fold -w 100; echo
printf 'last line without newline'
"""


async def test_sas_mode_streams_live_and_logs_equal_what_was_streamed(
    env: dict[str, str],
    factory: ClientFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
        connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"],
    )  # fmt: skip
    run_id, target, name = (
        f"r-{uuid.uuid4().hex[:10]}",
        _vm("vm-web-01", "rg-web"),
        f"azrun-{uuid.uuid4().hex[:8]}",
    )
    sink = Timed()
    printed = io.StringIO()
    printer = StreamPrinter(printed)

    def both(t: Target, stream: str, line: str) -> None:
        sink(t, stream, line)
        printer(t, stream, line)

    tailer = Tailer(store, run_id, both)  # default intervals: what users get
    try:
        pair = await store.prepare(run_id, target, expiry_s=600)
        tailer.add(target)
        iv = await _run(factory, target, pair, SCRIPT, name)
        ref, out_tail, err_tail = await tailer.complete(
            target, iv_output=iv.output or "", iv_error=iv.error or ""
        )
    finally:
        await tailer.aclose()
        await store.aclose()
        await _delete(factory, target, name)
    assert _state(iv) == "Succeeded"
    out = sink.lines[("vm-web-01", "stdout")]
    assert [line.split()[:2] for line in out[:4]] == [["tick", str(i)] for i in range(1, 5)]
    assert out[4] == "naïve café 日本語 🎉"
    assert out[5:-1] == ["x" * 100] * 3000
    assert out[-1] == "last line without newline"
    assert sink.lines[("vm-web-01", "stderr")] == ["warning: disk 91% full"]  # stderr kept apart
    # a slow writer shows up within 2 s of each write
    for line, arrived in sink.arrivals:
        if line.startswith("tick "):
            written = float(line.split()[2])
            assert arrived - written < 2.0, (line, arrived - written)
    assert (
        not ref.truncated
        and ref.stdout_bytes > 300_000
        and ref.stderr_bytes == len("warning: disk 91% full\n")
    )
    assert out_tail.splitlines()[-1] == "last line without newline" and err_tail == "warning: disk 91% full"
    assert ref.stdout_url == pair.stdout_url and "?" not in (ref.stdout_url or "")

    # `azrun logs` (no ledger entry for this run: the blobs are listed) prints what was streamed
    from azrun.cli import main

    capsys.readouterr()
    assert (
        await asyncio.to_thread(main, ["logs", run_id, "--output-container", env["AZRUN_OUTPUT_CONTAINER"]])
        == 0
    )
    logged = capsys.readouterr().out
    # the same lines, each stream in order; logs tags stdout too and prints stdout before stderr
    live = printed.getvalue().splitlines()
    assert logged.splitlines() == [
        line.replace("[vm-web-01] ", "[vm-web-01] (stdout) ", 1) for line in live if "(stderr)" not in line
    ] + [line for line in live if "(stderr)" in line]
    # one target, one stream: the exact bytes
    assert (
        await asyncio.to_thread(main, ["logs", run_id, "--target", "vm-web-01", "--stderr"]) == 0
    )  # container from the env
    assert capsys.readouterr().out == "warning: disk 91% full\n"
    # --download keeps every byte
    assert await asyncio.to_thread(main, ["logs", run_id, "--download", str(tmp_path / "dl")]) == 0
    saved = (tmp_path / "dl" / SUB1 / "rg-web" / "vm-web-01" / "stdout").read_bytes()
    assert saved.decode().splitlines() == out and len(saved) == ref.stdout_bytes
    text = printed.getvalue() + logged + capsys.readouterr().err
    text += "\n".join(r.getMessage() for r in caplog.records) + repr(pair)
    assert not SIG.search(text)


async def test_managed_identity_mode_the_vm_writes_with_its_own_identity(
    env: dict[str, str], factory: ClientFactory
) -> None:
    client_id = _client_id("id-azrun")
    ops_vm = _vm("vm-ops-01", "rg-ops", system_identity=True, user_identity_client_ids=(client_id,))
    for blob_identity, expected in (("system", {}), (client_id, {"clientId": client_id})):
        store = await OutputStore.open(
            container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, blob_identity=blob_identity
        )
        run_id, name = f"r-{uuid.uuid4().hex[:10]}", f"azrun-{uuid.uuid4().hex[:8]}"
        sink = Timed()
        tailer = Tailer(store, run_id, sink)
        try:
            assert store.check_target_identity(ops_vm) is None
            reason = store.check_target_identity(_vm("vm-web-02", "rg-web"))
            assert reason and "vm-web-02" in reason  # refused before dispatch
            pair = await store.prepare(run_id, ops_vm, expiry_s=600)
            assert pair.identity == expected and "?" not in pair.stdout_write_uri
            tailer.add(ops_vm)
            iv = await _run(factory, ops_vm, pair, "echo via identity; echo oops >&2", name)
            ref, out_tail, err_tail = await tailer.complete(
                ops_vm, iv_output=iv.output or "", iv_error=iv.error or ""
            )
        finally:
            await tailer.aclose()
            await store.aclose()
            await _delete(factory, ops_vm, name)
        assert _state(iv) == "Succeeded", iv.execution_message
        assert (out_tail, err_tail, ref.truncated) == ("via identity", "oops", False)
        assert sink.lines[("vm-ops-01", "stdout")] == ["via identity"]


async def test_identity_without_the_storage_role_fails_on_the_vm_and_azrun_reports_it(
    env: dict[str, str], factory: ClientFactory
) -> None:
    reader = _client_id("id-reader")  # attached to vm-ops-01 but only a storage reader
    ops_vm = _vm("vm-ops-01", "rg-ops", system_identity=True, user_identity_client_ids=(reader,))
    store = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, blob_identity=reader
    )
    run_id, name = f"r-{uuid.uuid4().hex[:10]}", f"azrun-{uuid.uuid4().hex[:8]}"
    tailer = Tailer(store, run_id, None)
    try:
        pair = await store.prepare(run_id, ops_vm, expiry_s=600)
        iv = await _run(factory, ops_vm, pair, "echo never", name)
        ref, _, _ = await tailer.complete(ops_vm, iv_output=iv.output or "", iv_error=iv.error or "")
    finally:
        await tailer.aclose()
        await store.aclose()
        await _delete(factory, ops_vm, name)
    assert iv.exit_code == -101 and "AppendBlob" in (iv.execution_message or "")
    assert ref.stdout_bytes == 0


async def test_five_megabytes_from_a_real_script_arrive_byte_identical(
    env: dict[str, str], factory: ClientFactory, tmp_path: Path
) -> None:
    import hashlib

    from azrun.output import split_text

    size = 5 * 1024 * 1024
    unit = "line of output — ünïcode ✓ 日本\n".encode()
    expected = (unit * (size // len(unit) + 1))[:size]  # ends inside a multibyte character
    script = f"yes 'line of output — ünïcode ✓ 日本' | head -c {size}"
    store = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
        connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"],
    )  # fmt: skip
    run_id, target, name = (
        f"r-{uuid.uuid4().hex[:10]}",
        _vm("vm-web-03", "rg-web"),
        f"azrun-{uuid.uuid4().hex[:8]}",
    )
    sink = Timed()
    tailer = Tailer(store, run_id, sink)
    try:
        pair = await store.prepare(run_id, target, expiry_s=600)
        tailer.add(target)
        iv = await _run(factory, target, pair, script, name)
        ref, _, _ = await tailer.complete(target, iv_output=iv.output or "", iv_error=iv.error or "")
        saved = await store.download(store.name_from_url(pair.stdout_url), tmp_path / "stdout")
        blob = await store.read(run_id, target, "stdout")
    finally:
        await tailer.aclose()
        await store.aclose()
        await _delete(factory, target, name)
    assert _state(iv) == "Succeeded"
    digest = hashlib.sha256(expected).hexdigest()
    assert hashlib.sha256(blob).hexdigest() == digest
    assert saved == size and hashlib.sha256((tmp_path / "stdout").read_bytes()).hexdigest() == digest
    assert ref.stdout_bytes == size and not ref.truncated  # the instance view's last 4 KB matched
    assert sink.lines[("vm-web-03", "stdout")] == split_text(expected)
