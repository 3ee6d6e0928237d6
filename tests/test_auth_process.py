"""Process scope: a forked child starts empty, processes never share tokens, only pacing.

``start_at_once`` releases many real Python processes at one instant, like cron jobs on one VM
(test_auth_sim.py runs twenty against the local Azure); the control here shows that without
the machine-wide limiter the same start is throttled.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _imds_stub import ImdsStub

from azrun import auth
from azrun.auth import PacingConfig
from azrun.auth._pacing import FileLimiter
from azrun.cloud import PUBLIC

MGMT = PUBLIC.management_scope

FETCH_SNIPPET = """
import asyncio, hashlib, sys
from azrun import auth
from azrun.cloud import PUBLIC
cred = auth.get_credential(cloud=PUBLIC)
tokens = {cred.get_token(PUBLIC.management_scope).token for _ in range(3)}
async def more():
    return (await auth.get_async_credential(cloud=PUBLIC).get_token(PUBLIC.management_scope)).token
tokens.add(asyncio.run(more()))
assert len(tokens) == 1, "one token per process"
print(hashlib.sha256(tokens.pop().encode()).hexdigest())
"""

# The same, but all imports done first; then "ready", and the fetch only on "go" from stdin:
# twenty processes released at one instant (a harsher start than cron's).
BARRIER_SNIPPET = """
import hashlib, os, sys
import azure.identity, azure.core.pipeline.transport
from azrun import auth
from azrun.cloud import Cloud
cloud = Cloud.from_env(os.environ)
cred = auth.get_credential(cloud=cloud)
print("ready", flush=True)
sys.stdin.readline()
print(hashlib.sha256(cred.get_token(cloud.management_scope).token.encode()).hexdigest(), flush=True)
"""


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
    auth.clear_process_cache()
    yield
    auth.clear_process_cache()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsStub]:
    with ImdsStub() as running:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", running.url)
        yield running


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def run_in_child(fn: object) -> tuple[int, str]:
    """Fork; the child runs ``fn()`` (returns str) and reports through a pipe. (status, text)"""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_fd)
            out = fn()  # type: ignore[operator]
        except BaseException as exc:
            out, code = f"{type(exc).__name__}: {exc}", 1
        os.write(write_fd, str(out).encode())
        os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("forked child hung")
        time.sleep(0.01)
    with os.fdopen(read_fd) as pipe:
        return os.waitstatus_to_exitcode(status), pipe.read()


def test_forked_child_refetches_and_parent_stays_warm(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    parent_token = cred.get_token(MGMT).token

    def child() -> str:
        assert "tokens=0" in repr(auth._state.current().cache), "child inherited tokens"
        return sha(cred.get_token(MGMT).token)  # the parent's handle works in the child

    code, out = run_in_child(child)
    assert code == 0, out
    assert out != sha(parent_token)
    assert len(stub.token_requests()) == 2
    assert cred.get_token(MGMT).token == parent_token
    assert len(stub.token_requests()) == 2


def test_fork_during_a_request_does_not_keep_the_parents_slot(stub: ImdsStub, tmp_path: Path) -> None:
    # One machine-wide slot: if the child kept the parent's inherited lock file open, neither
    # the child nor anyone else could ever send again.
    auth.configure_pacing(PacingConfig(concurrency=1, runtime_dir=str(tmp_path / "runtime")))
    stub.delay_s = 0.5
    cred = auth.get_credential(cloud=PUBLIC)
    fetcher = threading.Thread(target=lambda: cred.get_token(MGMT))
    fetcher.start()
    time.sleep(0.2)  # the parent's request is in flight, holding the slot
    code, out = run_in_child(lambda: sha(cred.get_token(MGMT).token))
    fetcher.join(10)
    assert code == 0, out
    assert len(stub.token_requests()) == 2
    assert stub.max_inflight == 1


def test_two_processes_each_fetch_once_and_no_token_touches_disk(stub: ImdsStub, tmp_path: Path) -> None:
    runs = [subprocess.run([sys.executable, "-c", FETCH_SNIPPET], capture_output=True, text=True, timeout=60)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert len(stub.token_requests()) == 2  # one per process, not one per call, not one shared
    issued = {sha(t): t for t in stub.issued}
    assert {run.stdout.strip() for run in runs} == set(issued)
    files = sorted(p.name for p in (tmp_path / "runtime").iterdir())
    assert "imds-pacing.json" in files and any(f.startswith("imds-slot-") for f in files)
    assert ((tmp_path / "runtime").stat().st_mode & 0o777) == 0o700
    blobs = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for token in issued.values():
        assert token.encode() not in blobs and token.split(".")[1].encode() not in blobs


def start_at_once(count: int, env: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Start ``count`` BARRIER_SNIPPET processes, release them together; (rc, stdout, stderr)."""
    procs = [subprocess.Popen([sys.executable, "-c", BARRIER_SNIPPET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, results, strict=True)]


@pytest.mark.slow
def test_without_machine_wide_pacing_the_same_start_is_throttled(stub: ImdsStub, tmp_path: Path) -> None:
    """The control for test_auth_sim's twenty-process test: per-process pacing alone gets 429s."""
    stub.delay_s = 0.5  # a wide window: robust even when the machine is busy starting them
    env = dict(os.environ, AZRUN_IMDS_CROSS_PROCESS="0", AZRUN_IMDS_RETRY_BACKOFF_S="0.01")
    start_at_once(10, env)
    assert 429 in stub.statuses()
    assert stub.max_inflight > 5


def test_file_limiter_paces_a_burst_across_instances(tmp_path: Path) -> None:
    """Two limiters on one directory (as two processes would be) share one schedule."""
    def frozen() -> float:
        return 5000.0  # a machine whose clock stands still while 15 requests book

    a = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=5, clock=frozen)
    b = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=5, clock=frozen)
    waits = [(a if i % 2 else b).reserve() for i in range(15)]
    # the burst, then one every 50 ms in booking order, whichever "process" booked
    assert waits == pytest.approx([0.0] * 5 + [0.05 * n for n in range(1, 11)], abs=1e-9)
    assert all(later > earlier for earlier, later in itertools.pairwise(waits[4:]))


def test_file_limiter_slots_are_exclusive_and_released(tmp_path: Path) -> None:
    limiter = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=2, poll_s=0.001)
    other = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=2, poll_s=0.001)
    with limiter.slot() as first, other.slot() as second:
        assert {first, second} == {0, 1}
        got: list[int] = []
        waiter = threading.Thread(target=lambda: got.append(other.slot().__enter__()))
        waiter.start()
        time.sleep(0.05)
        assert got == []  # both slots busy: the third request waits
    waiter.join(2)
    assert got and got[0] in (0, 1)


def test_stale_or_corrupt_pacing_state_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "imds-pacing.json").write_text('{"tat": 1e12}')  # e.g. from before a reboot
    limiter = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=5)
    assert limiter.reserve() == 0.0
    (tmp_path / "imds-pacing.json").write_text("not json")
    assert limiter.reserve() == 0.0
