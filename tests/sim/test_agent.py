"""The guest agent runs real scripts and streams their output to append blobs in a real Azurite.

Azurite (HTTPS with a throw-away CA, ``--oauth basic``) runs once for this module in a
background loop; each test runs an ``Agent`` on its own loop and reads the blobs back with
azure-storage-blob, as azrun would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from azrun.sim.agent import Agent
from azrun.sim.agent_files import TAIL_BYTES
from azrun.sim.azurite import ACCOUNT, ACCOUNT_KEY, OUTPUT_CONTAINER, Azurite
from azrun.sim.execution import ExecutionRequest, ExecutionStatus
from azrun.sim.fleetspec import Faults, Identity, SimSettings
from azrun.sim.identity import user_principal
from azrun.sim.tls import make_tls
from azrun.sim.tokens import Principal

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Azurite needs node")

SETTINGS = SimSettings(agent_upload_interval_s=0.1, agent_status_interval_s=0.1, agent_start_delay_s=0.0)
SUB = "00000000-0000-4000-8000-000000000001"
WRITER = Identity("id-writer", SUB, "rg-ops", storage_role="contributor")
READER = Identity("id-reader", SUB, "rg-ops", storage_role="reader")


@dataclass
class Storage:
    container_url: str
    connection_string: str
    ca: str

    def sas_url(self, blob: str, *, container: str = OUTPUT_CONTAINER) -> str:
        from azure.storage.blob import generate_blob_sas

        sas = generate_blob_sas(
            ACCOUNT,
            container,
            blob,
            account_key=ACCOUNT_KEY,
            permission="racw",
            expiry=datetime.now(timezone.utc) + timedelta(hours=1),
        )
        base = self.container_url.rsplit("/", 1)[0]
        return f"{base}/{container}/{blob}?{sas}"

    def read(self, blob: str) -> bytes:
        from azure.storage.blob import BlobClient

        client = BlobClient.from_connection_string(
            self.connection_string, OUTPUT_CONTAINER, blob, connection_verify=self.ca
        )
        with client:
            return client.download_blob().readall()

    def blob_type(self, blob: str) -> str:
        from azure.storage.blob import BlobClient

        client = BlobClient.from_connection_string(
            self.connection_string, OUTPUT_CONTAINER, blob, connection_verify=self.ca
        )
        with client:
            return str(client.get_blob_properties().blob_type)

    def exists(self, blob: str) -> bool:
        from azure.storage.blob import BlobClient

        client = BlobClient.from_connection_string(
            self.connection_string, OUTPUT_CONTAINER, blob, connection_verify=self.ca
        )
        with client:
            return bool(client.exists())


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """One Azurite for the module, started from a loop in a background thread."""
    workdir = tmp_path_factory.mktemp("azurite")
    tls = make_tls(workdir / "tls")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    azurite = Azurite(workdir=workdir / "azurite", tls=tls)
    asyncio.run_coroutine_threadsafe(azurite.start(), loop).result(60)
    try:
        yield Storage(azurite.container_url, azurite.connection_string, str(tls.ca_path))
    finally:
        asyncio.run_coroutine_threadsafe(azurite.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def faults() -> dict[str, Faults]:
    return {"now": Faults()}


@pytest.fixture
async def agent(tmp_path: Path, storage: Storage, faults: dict[str, Faults]) -> Any:
    roles = {WRITER.principal_id: "contributor", READER.principal_id: "reader"}

    def role(p: Principal) -> str:
        return roles.get(p.object_id, "contributor")

    a = Agent(
        root=tmp_path / "vms",
        settings=SETTINGS,
        faults=lambda: faults["now"],
        ca_bundle=storage.ca,
        storage_account_key=(ACCOUNT, ACCOUNT_KEY),
        storage_role=role,
    )
    try:
        yield a
    finally:
        await a.aclose()


def _req(name: str, script: str, **kwargs: Any) -> ExecutionRequest:
    base: dict[str, Any] = {"vm_id": f"/subscriptions/{SUB}/vm/{name}", "vm_display": "vm-1", "os": "linux"}
    return ExecutionRequest(**{**base, "run_command": name, "seq": 1, "script": script, **kwargs})


async def _until(status: ExecutionStatus, predicate: Any = None, timeout_s: float = 20) -> ExecutionStatus:
    deadline = time.monotonic() + timeout_s
    while not (predicate(status) if predicate else status.finished):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; status is {status}")
        await asyncio.sleep(0.02)
    return status


async def _blob_becomes(storage: Storage, blob: str, expected: bytes, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(storage.read, blob) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


async def test_parameters_env_and_streams(agent: Agent, storage: Storage, tmp_path: Path) -> None:
    script = 'echo "named=$GREETING secret=$TOKEN empty=${EMPTY-unset} args=$*"; echo "to stderr" >&2; env | sort > env.txt'
    st = agent.start(
        _req(
            "params",
            script,
            parameters=[("GREETING", "hello world"), ("", "a b"), ("EMPTY", "")],
            protected_parameters=[("TOKEN", "s3cret"), ("", "tail")],
            output_blob_uri=storage.sas_url("params/out.log"),
            error_blob_uri=storage.sas_url("params/err.log"),
        )
    )
    assert st.state == "Pending"
    await _until(st)
    assert (st.state, st.exit_code, st.message) == ("Succeeded", 0, "Execution completed")
    expected = "named=hello world secret=s3cret empty=unset args=a b tail\n"  # unnamed values word-split
    assert st.output == expected and st.error == "to stderr\n"
    assert st.start_time is not None and st.end_time is not None and st.started
    assert storage.read("params/out.log") == expected.encode()
    assert storage.read("params/err.log") == b"to stderr\n"
    assert storage.blob_type("params/out.log") == "BlobType.APPENDBLOB"
    env_file = next((tmp_path / "vms").rglob("env.txt"))
    names = {line.split("=", 1)[0] for line in env_file.read_text().splitlines()}
    assert {"PATH", "HOME", "LANG", "GREETING", "TOKEN"} <= names
    assert not names & {"PYTEST_CURRENT_TEST", "VIRTUAL_ENV", "EMPTY"}  # scrubbed; empty value skipped
    assert "s3cret" not in repr(_req("x", "", protected_parameters=[("T", "s3cret")], run_as_password="pw"))


async def test_five_megabytes_arrive_whole_and_the_view_keeps_4kb(agent: Agent, storage: Storage) -> None:
    script = "for i in $(seq 1 6); do head -c 900000 /dev/zero | tr '\\0' 'x'; printf 'chunk %d\\n' $i; sleep 0.05; done"
    expected = b"".join(b"x" * 900000 + f"chunk {i}\n".encode() for i in range(1, 7))
    st = agent.start(_req("big", script, output_blob_uri=storage.sas_url("big/out.log")))
    await _until(st)
    assert st.state == "Succeeded"
    blob = storage.read("big/out.log")
    assert len(blob) == len(expected) > 5_000_000
    assert hashlib.sha256(blob).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert st.output.encode() == expected[-TAIL_BYTES:]


async def test_multibyte_utf8_survives_the_blob_and_the_tail_is_bytes(agent: Agent, storage: Storage) -> None:
    line = "héllo wörld ✓ 日本語 🚀\n"
    st = agent.start(
        _req(
            "utf8",
            f"for i in $(seq 1 400); do printf '%s' '{line}'; done",
            output_blob_uri=storage.sas_url("utf8/out.log"),
        )
    )
    await _until(st)
    assert storage.read("utf8/out.log").decode("utf-8") == line * 400
    # the tail is the last 4096 *bytes*: the cut splits a character, which decodes as U+FFFD
    assert st.output == (line * 400).encode()[-TAIL_BYTES:].decode("utf-8", errors="replace")
    assert st.output.startswith("\ufffd") and st.output.endswith(line)


async def test_exit_code_is_failed_with_the_handler_message(agent: Agent) -> None:
    st = await _until(agent.start(_req("fail", "echo partial; exit 7")))
    assert (st.state, st.exit_code) == ("Failed", 7)
    assert st.message == "Execution failed: failed to execute command: command terminated with exit status=7"
    assert st.output == "partial\n"
    await agent.kill(f"/subscriptions/{SUB}/vm/fail", "fail")  # deleting a finished run command
    [record] = agent.executions()
    assert (record["state"], record["exitCode"], record["killed"]) == ("Failed", 7, False)


async def test_managed_identity_upload_and_reader_role_refused(
    agent: Agent, storage: Storage, tmp_path: Path
) -> None:
    writer = user_principal(WRITER, "72f988bf-0000-4000-8000-00000000a2a1")
    uri = f"{storage.container_url}/mi/out.log"
    st = await _until(
        agent.start(_req("mi", "echo via token", output_blob_uri=uri, output_blob_principal=writer))
    )
    assert st.state == "Succeeded"
    assert storage.read("mi/out.log") == b"via token\n"

    reader = user_principal(READER, "72f988bf-0000-4000-8000-00000000a2a1")
    marker = tmp_path / "ran"
    req = _req("mi2", f"touch {marker}", output_blob_uri=f"{uri}2", output_blob_principal=reader)
    st = await _until(agent.start(req))
    assert (st.state, st.exit_code, st.started) == ("Failed", -101, False)
    assert "Error creating AppendBlob" in st.message and "AuthorizationPermissionMismatch" in st.message
    assert not marker.exists()
    assert agent.executions() == [e for e in agent.executions() if e["runCommand"] == "mi"]


async def test_bad_sas_or_missing_container_fail_with_101_and_nothing_runs(
    agent: Agent, storage: Storage, tmp_path: Path
) -> None:
    good = storage.sas_url("bad/out.log")
    tampered = good.replace("sig=", "sig=AAAA")
    missing = storage.sas_url("x/out.log", container="no-such-container")
    for i, uri in enumerate((tampered, missing)):
        marker = tmp_path / f"ran{i}"
        st = await _until(agent.start(_req(f"bad{i}", f"touch {marker}", output_blob_uri=uri)))
        assert (st.state, st.exit_code) == ("Failed", -101)
        assert st.message.startswith("Execution failed: Error creating AppendBlob 'https://")
        assert "sig=" not in st.message and "?" not in st.message.split("'")[1]
        assert "StatusCode=40" in st.message
        assert not marker.exists()
    assert "ContainerNotFound" in st.message
    assert agent.executions() == []


async def test_timeout_kills_the_whole_group(agent: Agent, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started; sleep 300"
    started = time.monotonic()
    st = await _until(agent.start(_req("slow", script, timeout_s=1)))
    assert time.monotonic() - started < 10
    assert (st.state, st.exit_code) == ("Failed", -1)
    assert st.message.endswith("command terminated with exit status=-1")
    assert st.output == "started\n"
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        await asyncio.sleep(0.02)
    assert not _alive(grandchild)
    assert agent.running_count() == 0


async def test_kill_freezes_the_status_and_forgets_the_execution(agent: Agent, tmp_path: Path) -> None:
    st = agent.start(_req("victim", "echo before; sleep 300"))
    await _until(st, lambda s: s.output == "before\n")
    [execution] = agent.executions()
    await agent.kill("/SUBSCRIPTIONS/" + SUB + "/VM/VICTIM", "Victim")  # ids are case-insensitive
    assert st.state == "Running" and st.finished and st.end_time is None
    assert not _alive(execution["pid"])
    assert agent.executions()[0]["killed"] is True
    await agent.kill(execution["vm"], "victim")  # forgotten: a second kill is a no-op


async def test_hung_agent_never_reports_completion(agent: Agent, storage: Storage) -> None:
    st = agent.start(_req("hung", "echo done", hung=True, output_blob_uri=storage.sas_url("hung/out.log")))
    await _until(st, lambda s: s.started)
    assert await _blob_becomes(storage, "hung/out.log", b"done\n")  # the script really ran
    await asyncio.sleep(0.3)
    assert (st.state, st.finished, st.message) == ("Running", False, "Execution in progress")
    assert agent.executions()[0]["hung"] is True


async def test_append_failures_are_retried_next_tick(
    agent: Agent, storage: Storage, faults: dict[str, Faults], tmp_path: Path
) -> None:
    faults["now"] = replace(faults["now"], blob_append_failure_rate=1.0)
    go = tmp_path / "go"
    script = f"echo one; while [ ! -e {go} ]; do sleep 0.05; done; echo two"
    st = agent.start(_req("flaky", script, output_blob_uri=storage.sas_url("flaky/out.log")))
    await _until(st, lambda s: s.output == "one\n")
    await asyncio.sleep(0.3)  # a few upload ticks, all failing
    assert await asyncio.to_thread(storage.read, "flaky/out.log") == b""
    faults["now"] = Faults()
    go.touch()
    await _until(st)
    assert st.state == "Succeeded"  # append failures never reach the instance view
    assert storage.read("flaky/out.log") == b"one\ntwo\n"  # the failed bytes were sent again


async def test_re_start_replaces_the_previous_execution(agent: Agent) -> None:
    first = agent.start(_req("again", "sleep 300"))
    await _until(first, lambda s: s.started)
    second = await _until(agent.start(replace(_req("again", "echo new"), seq=2)))
    assert second.state == "Succeeded" and second.output == "new\n"
    assert first.finished and first.state == "Running"
    assert [e["seq"] for e in agent.executions()] == [1, 2]


async def test_run_as_unknown_user_fails_with_102(agent: Agent) -> None:
    st = await _until(
        agent.start(_req("runas", "id", run_as_user="no-such-user-azrun", run_as_password="pw"))
    )
    assert (st.state, st.exit_code) == ("Failed", -102)
    assert "pw" not in st.message.replace("no-such-user", "")


@pytest.mark.skipif(shutil.which("pwsh") is not None, reason="pwsh is installed here")
async def test_windows_without_pwsh_fails_clearly(agent: Agent) -> None:
    st = await _until(agent.start(_req("win", "Write-Output hi", os="windows")))
    assert st.state == "Failed" and "pwsh" in st.message
    assert agent.executions() == []


async def test_unknown_command_id_fails_clearly(agent: Agent) -> None:
    st = await _until(agent.start(_req("cid", "", command_id="ifconfig")))
    assert st.state == "Failed" and "commandId 'ifconfig'" in st.message


async def test_background_processes_die_with_the_script(agent: Agent, tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    st = await _until(agent.start(_req("daemon", f"sleep 300 & echo $! > {pidfile}; echo bye")))
    assert (st.state, st.output) == ("Succeeded", "bye\n")
    daemon = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(daemon):
            break
        await asyncio.sleep(0.02)
    assert not _alive(daemon)


async def test_run_as_the_current_user_runs(agent: Agent) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    st = await _until(agent.start(_req("runas-me", "id -un", run_as_user=me, run_as_password="hunter2")))
    assert (st.state, st.output) == ("Succeeded", f"{me}\n")


async def test_script_uri_is_downloaded_with_its_sas(agent: Agent, storage: Storage) -> None:
    from azure.storage.blob import BlobClient

    def upload() -> None:
        client = BlobClient.from_connection_string(
            storage.connection_string, OUTPUT_CONTAINER, "scripts/hello.sh", connection_verify=storage.ca
        )
        with client:
            client.upload_blob(b"\xef\xbb\xbf#!/bin/bash\r\necho from-uri $1\r\n", overwrite=True)

    await asyncio.to_thread(upload)
    uri = storage.sas_url("scripts/hello.sh")
    st = await _until(agent.start(_req("byuri", "", script_uri=uri, parameters=[("", "x")])))
    assert (st.state, st.output) == ("Succeeded", "from-uri x\n")  # BOM and CRLF fixed like the handler
    missing = storage.sas_url("scripts/missing.sh")
    st = await _until(agent.start(_req("byuri2", "", script_uri=missing)))
    assert (st.state, st.exit_code) == ("Failed", -100) and "sig=" not in st.message


async def test_nameless_parameters_never_reach_a_shell(agent: Agent, tmp_path: Path) -> None:
    """Issue 14 item 13: ``("", "x; touch <file>")`` is words for the script, not a command for a shell."""
    owned = tmp_path / "owned"
    sub = tmp_path / "sub"
    tick = tmp_path / "tick"
    hostile = [
        ("", f"x; touch {owned}"),
        ("", f"$(touch {sub})"),
        ("", f"`touch {tick}` *"),
    ]
    st = agent.start(_req("inject", 'printf "%s|" "$#" "$@"', parameters=hostile))
    await _until(st)
    assert (st.state, st.exit_code) == ("Succeeded", 0), st
    assert not owned.exists() and not sub.exists() and not tick.exists()
    # Word-split on blanks like the handler's unquoted string, but every character kept as is.
    assert st.output == f"8|x;|touch|{owned}|$(touch|{sub})|`touch|{tick}`|*|"


async def test_brief_example_creates_no_file(agent: Agent) -> None:
    marker = Path("/tmp/owned")
    existed = marker.exists()
    st = agent.start(_req("brief", "echo $1", parameters=[("", "x; touch /tmp/owned")]))
    await _until(st)
    assert (st.state, st.output) == ("Succeeded", "x;\n")
    assert marker.exists() == existed  # nothing created it (it may pre-exist on a shared host)


async def test_shebang_decides_the_interpreter(agent: Agent) -> None:
    st = agent.start(_req("shebang", "#!/bin/sh\necho \"$0\" | grep -c script.sh", parameters=[("", "a")]))
    await _until(st)
    assert (st.state, st.output) == ("Succeeded", "1\n")


async def test_same_named_vms_get_separate_work_directories(agent: Agent) -> None:
    """Same VM name and run-command name, other resource group / subscription: two directories."""
    ids = [
        f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft.Compute/virtualMachines/vm-1",
        f"/subscriptions/{SUB}/resourceGroups/rg-b/providers/Microsoft.Compute/virtualMachines/vm-1",
        "/subscriptions/99999999-9999-4999-8999-999999999999/resourceGroups/rg-a/providers/"
        "Microsoft.Compute/virtualMachines/vm-1",
    ]
    statuses = [
        agent.start(_req("same", "sleep 0.2; pwd; cat mark 2>/dev/null; echo $RANDOM > mark", vm_id=vm_id))
        for vm_id in ids
    ]
    for st in statuses:
        await _until(st)
        assert st.state == "Succeeded", st
    dirs = [st.output.splitlines()[0] for st in statuses]
    assert len(set(dirs)) == 3 and all("vm-1-" in d for d in dirs)
    assert all(len(st.output.splitlines()) == 1 for st in statuses)  # no one found another's mark
    # The same resource id in another casing is the same machine.
    again = agent.start(_req("same", "pwd", vm_id=ids[0].upper(), seq=2))
    await _until(again)
    assert again.output.strip().rsplit("/", 2)[0] == dirs[0].rsplit("/", 2)[0]
