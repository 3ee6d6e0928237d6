"""OutputStore + Tailer against the local Azure's Azurite (HTTPS, --oauth basic), over real sockets.

The writer here is what the VM does: raw HTTPS ``PUT <blob>?<sas>`` (create) and
``PUT ...&comp=appendblock`` with the SAS URI azrun handed out, so the SAS itself is exercised.
Run commands driven through ARM are in test_output_e2e.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import ssl
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from azrun.clients import ClientFactory
from azrun.errors import ConfigError, OutputError
from azrun.models import Target, TargetKind
from azrun.output import BlobPair, OutputStore, Tailer

X_MS_VERSION = "2025-11-05"
SIG = re.compile(r"sig=(?!REDACTED)[^&\s\"']+")


def _target(name: str, **kw: Any) -> Target:
    ss, _, inst = name.partition("/")
    kind = f"virtualMachineScaleSets/{ss}/virtualMachines/{inst}" if inst else f"virtualMachines/{name}"
    return Target(
        resource_id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/{kind}",
        name=name, kind=TargetKind.VM, subscription_id="s", resource_group="rg", location="westeurope",
        os="linux", power_state="running", **kw,
    )  # fmt: skip


def _run_id() -> str:
    return f"r-{uuid.uuid4().hex[:12]}"


class Writer:
    """Writes blobs the way the Linux handler does, with the SAS URI azrun handed out."""

    def __init__(self, ca: str) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca)),
            skip_auto_headers=("Content-Type",),
        )

    async def create(self, sas_uri: str) -> int:
        headers = {"x-ms-blob-type": "AppendBlob", "x-ms-version": X_MS_VERSION, "Content-Length": "0"}
        async with self._session.put(sas_uri, headers=headers, data=b"") as resp:
            return resp.status

    async def append(self, sas_uri: str, data: bytes) -> None:
        headers = {"x-ms-version": X_MS_VERSION, "Content-Length": str(len(data))}
        async with self._session.put(f"{sas_uri}&comp=appendblock", headers=headers, data=data) as resp:
            assert resp.status == 201, await resp.text()

    async def close(self) -> None:
        await self._session.close()


@pytest.fixture
def env(local_azure: Any, azure_env: Callable[[Any], dict[str, str]]) -> dict[str, str]:
    return azure_env(local_azure)


@pytest.fixture
async def factory(env: dict[str, str]) -> AsyncIterator[ClientFactory]:
    f = ClientFactory.from_env(env)
    yield f
    await f.aclose()


@pytest.fixture
async def store(env: dict[str, str], factory: ClientFactory) -> AsyncIterator[OutputStore]:
    s = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"],
        factory=factory,
        connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"],
    )
    yield s
    await s.aclose()


@pytest.fixture
async def writer(env: dict[str, str]) -> AsyncIterator[Writer]:
    w = Writer(env["AZRUN_CA_BUNDLE"])
    yield w
    await w.close()


class Collect:
    """A sink that records lines per (target, stream) with arrival order."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.all: list[tuple[str, str, str]] = []

    def __call__(self, target: Target, stream: str, line: str) -> None:
        self.lines[(target.name, stream)].append(line)
        self.all.append((target.name, stream, line))


# -- open: checks before anything runs ---------------------------------------------------------
async def test_open_with_connection_string_uses_account_key_sas(store: OutputStore) -> None:
    assert store.mode == "account-key"
    assert "Eby8" not in repr(store)  # the well-known emulator key never shows


async def test_open_with_entra_identity_uses_user_delegation_sas(
    env: dict[str, str], factory: ClientFactory
) -> None:
    s = await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory)
    try:
        assert s.mode == "user-delegation"
        pair = await s.prepare(_run_id(), _target("vm-ud"), expiry_s=3600)
        assert "skoid=" in pair.stdout_write_uri and "sp=racw" in pair.stdout_write_uri
        assert pair.identity is None
    finally:
        await s.aclose()


async def test_missing_container_fails_with_the_fix(env: dict[str, str], factory: ClientFactory) -> None:
    url = env["AZRUN_OUTPUT_CONTAINER"].rsplit("/", 1)[0] + "/no-such-container"
    with pytest.raises(OutputError) as info:
        await OutputStore.open(
            container_url=url, factory=factory, connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"]
        )
    assert str(info.value) == f"the container {url} does not exist: create it or fix --output-container"
    assert info.value.hint and "az storage container create" in info.value.hint


async def test_bad_key_fails_before_dispatch_with_a_hint(env: dict[str, str], factory: ClientFactory) -> None:
    bad = re.sub(r"AccountKey=[^;]+", "AccountKey=" + "A" * 86 + "==", env["AZRUN_STORAGE_CONNECTION_STRING"])
    with pytest.raises(OutputError) as info:
        await OutputStore.open(
            container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, connection_string=bad
        )
    assert "rejected azrun's credentials" in str(info.value)
    assert info.value.hint and "Storage Blob Data Contributor" in info.value.hint
    assert "AAAA" not in str(info.value) + info.value.hint


async def test_connection_string_for_another_account_is_refused(
    env: dict[str, str], factory: ClientFactory
) -> None:
    other = env["AZRUN_STORAGE_CONNECTION_STRING"].replace(
        "AccountName=devstoreaccount1", "AccountName=other"
    )
    with pytest.raises(ConfigError):
        await OutputStore.open(
            container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, connection_string=other
        )


async def test_sas_container_url_is_refused(env: dict[str, str], factory: ClientFactory) -> None:
    with pytest.raises(ConfigError) as info:
        await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"] + "?sv=1&sig=abc", factory=factory)
    assert "abc" not in str(info.value)


# -- prepare + SAS --------------------------------------------------------------------------------
async def test_prepare_creates_empty_append_blobs_and_a_scoped_sas(
    store: OutputStore, writer: Writer
) -> None:
    run_id, target = _run_id(), _target("vm-web-01")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    assert (pair.stdout_url, pair.stderr_url) == store.urls(run_id, target)
    assert pair.stdout_url.endswith(f"/{run_id}/s/rg/vm-web-01/stdout") and "?" not in pair.stdout_url
    assert pair.stdout_write_uri.startswith(pair.stdout_url + "?")
    assert "sp=racw" in pair.stdout_write_uri and "spr=https" in pair.stdout_write_uri
    assert await store.read(run_id, target, "stdout") == b""
    # the handler re-creates the blob with the SAS, then appends
    assert await writer.create(pair.stdout_write_uri) == 201
    await writer.append(pair.stdout_write_uri, b"hello\n")
    assert await store.read(run_id, target, "stdout") == b"hello\n"
    # the SAS is for that one blob only
    other = pair.stdout_write_uri.replace("/vm-web-01/stdout?", "/vm-web-01/other?")
    assert await writer.create(other) == 403


async def test_names_with_slashes_and_unicode(store: OutputStore, writer: Writer) -> None:
    run_id = _run_id()
    target = _target("vmss-api/3 ü")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    await writer.append(pair.stderr_write_uri, b"x\n")
    assert await store.read(run_id, target, "stderr") == b"x\n"
    assert store.name_from_url(pair.stderr_url) == f"{run_id}/s/rg/vmss-api/3 ü/stderr"


async def test_managed_identity_mode(env: dict[str, str], factory: ClientFactory) -> None:
    cid = "0b2d5c1e-0000-4000-8000-000000000001"
    s = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, blob_identity=cid,
        connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"],
    )  # fmt: skip
    try:
        assert s.mode == "managed-identity"
        pair = await s.prepare(_run_id(), _target("vm-mi"), expiry_s=3600)
        assert pair.identity == {"clientId": cid}
        assert pair.stdout_write_uri == pair.stdout_url  # no SAS at all
        assert s.check_target_identity(_target("a", user_identity_client_ids=(cid.upper(),))) is None
        reason = s.check_target_identity(_target("b", system_identity=True))
        assert reason and cid in reason and "not attached" in reason
    finally:
        await s.aclose()
    system = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory, blob_identity="system", verify=False
    )
    try:
        assert system.check_target_identity(_target("c", system_identity=True)) is None
        reason = system.check_target_identity(_target("d"))
        assert reason and "system-assigned" in reason
        assert (await system.prepare(_run_id(), _target("e"), expiry_s=60)).identity == {}
    finally:
        await system.aclose()


# -- tail -----------------------------------------------------------------------------------------
async def _settle(tailer: Tailer, target: Target, **iv: str) -> Any:
    return await tailer.complete(target, iv_output=iv.get("out", ""), iv_error=iv.get("err", ""))


async def test_five_megabytes_arrive_whole_and_byte_identical(
    store: OutputStore, writer: Writer, tmp_path: Path
) -> None:
    run_id, target = _run_id(), _target("vm-big")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    rng = random.Random(5)
    size = 5 * 1024 * 1024
    parts: list[bytes] = []
    total = 0
    while total < size - 400:
        line = f"{len(parts):07d} {'é' * rng.randint(0, 40)}{'x' * rng.randint(0, 200)} 🎉\n".encode()
        parts.append(line)
        total += len(line)
    body = b"".join(parts) + b"z" * (size - total)  # exactly 5 MiB, ending in a partial line
    assert len(body) == size
    sink = Collect()
    tailer = Tailer(store, run_id, sink, min_interval_s=0.05, max_interval_s=0.2)
    tailer.add(target)
    for start in range(0, len(body), 700_001):  # appends that split lines and characters
        await writer.append(pair.stdout_write_uri, body[start : start + 700_001])
        await asyncio.sleep(0.02)
    ref, out_tail, _ = await _settle(tailer, target)
    await tailer.aclose()
    digest = hashlib.sha256(body).hexdigest()
    streamed = "\n".join(sink.lines[("vm-big", "stdout")]).encode()
    assert hashlib.sha256(streamed).hexdigest() == digest  # every byte, in order, through the tail
    assert ref.stdout_bytes == len(body) and not ref.truncated
    assert out_tail.splitlines() == sink.lines[("vm-big", "stdout")][-20:]
    assert hashlib.sha256(await store.read(run_id, target, "stdout")).hexdigest() == digest
    path = tmp_path / "out"
    assert await store.download(f"{run_id}/s/rg/vm-big/stdout", path) == len(body)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


async def test_multibyte_utf8_split_across_appends(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-utf8")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    text = "naïve café — 日本語 🎉 done\nzweite Zeile ß\n"
    data = text.encode()
    sink = Collect()
    tailer = Tailer(store, run_id, sink, min_interval_s=0.05, max_interval_s=0.1)
    tailer.add(target)
    for i in range(len(data)):  # every byte its own append: every character is split
        await writer.append(pair.stdout_write_uri, data[i : i + 1])
        if i % 7 == 0:
            await asyncio.sleep(0.03)  # let the tailer read mid-character
    await _settle(tailer, target)
    await tailer.aclose()
    assert sink.lines[("vm-utf8", "stdout")] == ["naïve café — 日本語 🎉 done", "zweite Zeile ß"]
    assert tailer.stats.polls_with_data > 1  # it really read in pieces


async def test_hundred_targets_keep_per_target_order_and_streams_apart(
    store: OutputStore, writer: Writer
) -> None:
    run_id = _run_id()
    targets = [_target(f"vm-{i:03d}") for i in range(100)]
    pairs: list[BlobPair] = await asyncio.gather(*(store.prepare(run_id, t, expiry_s=3600) for t in targets))
    sink = Collect()
    tailer = Tailer(store, run_id, sink, max_tailed=100, min_interval_s=0.2, max_interval_s=0.5)
    for t in targets:
        tailer.add(t)

    async def write(t: Target, pair: BlobPair) -> None:
        for batch in range(2):
            out = "".join(f"{t.name} line {batch * 25 + j}\n" for j in range(25)).encode()
            await writer.append(pair.stdout_write_uri, out)
            await asyncio.sleep(0.05)
        await writer.append(pair.stderr_write_uri, "".join(f"{t.name} warn {n}\n" for n in range(5)).encode())

    await asyncio.gather(*(write(t, p) for t, p in zip(targets, pairs, strict=True)))
    results = await asyncio.gather(*(_settle(tailer, t) for t in targets))
    await tailer.aclose()
    for t, (ref, _, err_tail) in zip(targets, results, strict=True):
        assert sink.lines[(t.name, "stdout")] == [f"{t.name} line {n}" for n in range(50)]
        assert sink.lines[(t.name, "stderr")] == [f"{t.name} warn {n}" for n in range(5)]
        assert err_tail == "\n".join(f"{t.name} warn {n}" for n in range(5))
        assert ref.stdout_bytes == len("".join(f"{t.name} line {n}\n" for n in range(50)))
    # the targets really streamed side by side: the first half of all lines spans most of them
    first_half = {name for name, _, _ in sink.all[: len(sink.all) // 2]}
    assert len(first_half) > 30


async def test_only_max_tailed_targets_are_live_and_the_rest_print_at_completion(
    store: OutputStore, writer: Writer
) -> None:
    run_id = _run_id()
    targets = [_target(f"vm-q{i}") for i in range(3)]
    pairs = [await store.prepare(run_id, t, expiry_s=3600) for t in targets]
    sink = Collect()
    tailer = Tailer(store, run_id, sink, max_tailed=1, min_interval_s=0.05, max_interval_s=0.1)
    for t in targets:
        tailer.add(t)
    assert (tailer.tailed, tailer.waiting) == (1, 2)
    for p in pairs:
        await writer.append(p.stdout_write_uri, b"one\ntwo\n")
    await asyncio.sleep(0.3)
    assert list(sink.lines) == [("vm-q0", "stdout")]  # only the tailed one streamed
    await _settle(tailer, targets[0])
    assert (tailer.tailed, tailer.waiting) == (1, 1)  # the next one got the slot
    await _settle(tailer, targets[2])  # never tailed: read whole at completion
    await _settle(tailer, targets[1])
    await tailer.aclose()
    assert all(sink.lines[(t.name, "stdout")] == ["one", "two"] for t in targets)


async def test_idle_blob_costs_one_bodiless_request_per_poll(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-idle")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    await writer.append(pair.stdout_write_uri, b"a\n")
    await writer.append(pair.stderr_write_uri, b"b\n")
    sink = Collect()
    tailer = Tailer(store, run_id, sink, min_interval_s=0.05, max_interval_s=0.05)
    tailer.add(target)
    await asyncio.sleep(0.3)
    before_req, before_empty, polls = store.stats.requests, store.stats.empty_reads, tailer.stats.polls
    for _ in range(200):  # at least 6 polls, however loaded the machine is
        await asyncio.sleep(0.05)
        if tailer.stats.polls - polls >= 6:
            break
    polls = tailer.stats.polls - polls
    assert polls >= 6
    # one request per poll (the poll in flight at either snapshot may land on one side only)
    assert polls - 1 <= store.stats.requests - before_req <= polls + 1
    assert polls - 1 <= store.stats.empty_reads - before_empty <= polls + 1  # each found nothing new
    await _settle(tailer, target)
    await tailer.aclose()


async def test_interval_backs_off_when_idle_and_snaps_back_on_data(
    store: OutputStore, writer: Writer
) -> None:
    run_id, target = _run_id(), _target("vm-adapt")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    tailer = Tailer(store, run_id, Collect(), min_interval_s=0.02, max_interval_s=0.4, backoff=2.0)
    tailer.add(target)
    await asyncio.sleep(1.0)
    idle_polls = tailer.stats.polls
    assert idle_polls < 2 * 10  # geometric backoff: far fewer than 1.0 / 0.02 * 2 streams
    await writer.append(pair.stdout_write_uri, b"x\n")
    await asyncio.sleep(0.6)
    assert tailer.stats.polls_with_data == 1
    await tailer.aclose()


async def test_recreated_blob_restarts_from_zero(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-again")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    sink = Collect()
    notices: list[str] = []
    tailer = Tailer(
        store,
        run_id,
        sink,
        min_interval_s=0.05,
        max_interval_s=0.1,
        notice=lambda t, text: notices.append(text),
    )
    tailer.add(target)
    await writer.append(pair.stdout_write_uri, b"first run line 1\nfirst run line 2\n")
    await asyncio.sleep(0.4)
    assert sink.lines[("vm-again", "stdout")] == ["first run line 1", "first run line 2"]
    # the script runs again: the handler replaces the blob, then writes less than before
    assert await writer.create(pair.stdout_write_uri) == 201
    await writer.append(pair.stdout_write_uri, b"second\n")
    ref, out_tail, _ = await _settle(tailer, target, out="second\n")
    await tailer.aclose()
    assert sink.lines[("vm-again", "stdout")][-1] == "second"
    assert tailer.stats.restarts == 1 and len(notices) == 1 and "re-created" in notices[0]
    assert ref.stdout_bytes == len(b"second\n") and out_tail == "second" and not ref.truncated


async def test_recreate_before_anything_printed_is_silent(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-fresh")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    notices: list[str] = []
    sink = Collect()
    tailer = Tailer(store, run_id, sink, min_interval_s=0.05, notice=lambda t, text: notices.append(text))
    tailer.add(target)
    await asyncio.sleep(0.15)
    assert await writer.create(pair.stdout_write_uri) == 201  # what the agent does before the script
    await writer.append(pair.stdout_write_uri, b"ok\n")
    await _settle(tailer, target, out="ok\n")
    await tailer.aclose()
    assert sink.lines[("vm-fresh", "stdout")] == ["ok"] and notices == []


async def test_upload_failed_on_the_vm_falls_back_to_the_instance_view(store: OutputStore) -> None:
    run_id, target = _run_id(), _target("vm-noupload")
    await store.prepare(run_id, target, expiry_s=3600)  # blobs exist, the VM never writes
    sink = Collect()
    notices: list[str] = []
    tailer = Tailer(store, run_id, sink, settle_s=0.3, notice=lambda t, text: notices.append(text))
    iv = "".join(f"line {i}\n" for i in range(600))[-4096:]
    ref, out_tail, err_tail = await _settle(tailer, target, out=iv)
    await tailer.aclose()
    assert ref.truncated and ref.stdout_bytes == 0 and ref.stdout_url and ref.stdout_url.endswith("/stdout")
    assert out_tail.splitlines()[-1] == "line 599" and err_tail == ""
    assert sink.lines[("vm-noupload", "stdout")][-1] == "line 599"  # the user still sees it
    marks = sink.lines[("vm-noupload", "azrun")]  # marked, in order before those lines
    assert len(marks) == 1 and "did the upload fail" in marks[0] and "truncated" in marks[0] and notices == []
    assert sink.all.index(("vm-noupload", "azrun", marks[0])) < sink.all.index(("vm-noupload", "stdout", "line 599"))


async def test_missing_blob_falls_back_too(store: OutputStore) -> None:
    notices: list[str] = []
    tailer = Tailer(store, _run_id(), None, settle_s=0.1, notice=lambda t, text: notices.append(text))
    ref, out_tail, _ = await _settle(tailer, _target("vm-never-prepared"), out="tail only\n")
    assert ref.truncated and out_tail == "tail only" and "blob is missing" in notices[0]


async def test_blob_lacking_the_last_bytes_is_flagged(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-lastfail")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    await writer.append(pair.stdout_write_uri, b"early\n")  # the final append never came
    notices: list[str] = []
    tailer = Tailer(store, run_id, None, settle_s=0.3, notice=lambda t, text: notices.append(text))
    ref, out_tail, _ = await _settle(tailer, target, out="early\nlate\n")
    await tailer.aclose()
    assert ref.truncated and out_tail == "early\nlate" and "last upload of stdout failed" in notices[0]


async def test_lost_last_append_prints_the_instance_views_lines_after_a_marker(
    store: OutputStore, writer: Writer
) -> None:
    """Issue 14 item 8: the blob got all but the last append; the lost lines are printed, marked."""
    run_id, target = _run_id(), _target("vm-lastappend")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    full = "".join(f"step {i} done\n" for i in range(400)).encode()  # ~5.6 KB
    cut = len(full) - 700 - 5  # the last append (700+ bytes, starting mid-line) never arrives
    await writer.append(pair.stdout_write_uri, full[:cut])
    sink = Collect()
    tailer = Tailer(store, run_id, sink, settle_s=0.3, min_interval_s=0.05)
    tailer.add(target)
    await asyncio.sleep(0.3)
    ref, out_tail, _ = await _settle(tailer, target, out=full[-4096:].decode())
    await tailer.aclose()
    assert sink.lines[("vm-lastappend", "stdout")] == [f"step {i} done" for i in range(400)]  # each once
    marks = sink.lines[("vm-lastappend", "azrun")]
    assert len(marks) == 1 and "last upload of stdout failed" in marks[0] and f"byte {cut}" in marks[0]
    recovered = [line for _, stream, line in sink.all[sink.all.index(("vm-lastappend", "azrun", marks[0])) :]
                 if stream == "stdout"]  # fmt: skip
    assert recovered[0] == "step 349 done" and len(recovered) == 51  # the mid-line cut is printed whole
    assert ref.truncated and ref.stdout_bytes == cut and out_tail.splitlines()[-1] == "step 399 done"


async def test_more_than_four_kb_lost_says_lines_are_missing(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-gap")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    full = "".join(f"row {i:05d}\n" for i in range(2000)).encode()
    await writer.append(pair.stdout_write_uri, full[:5000])
    sink = Collect()
    tailer = Tailer(store, run_id, sink, settle_s=0.2)
    ref, _, _ = await _settle(tailer, target, out=full[-4096:].decode())
    out = sink.lines[("vm-gap", "stdout")]
    assert out[: len(full[:5000].decode().splitlines())] == full[:5000].decode().splitlines()
    assert out[-1] == "row 01999" and ref.truncated
    assert "lines between are lost" in sink.lines[("vm-gap", "azrun")][0]


async def test_bytes_written_at_the_last_moment_are_not_lost(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-late")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    await writer.append(pair.stdout_write_uri, b"a\n")
    sink = Collect()
    tailer = Tailer(store, run_id, sink, settle_s=2.0)

    async def late() -> None:
        await asyncio.sleep(0.3)
        await writer.append(pair.stdout_write_uri, b"b\n")

    task = asyncio.create_task(late())
    ref, out_tail, _ = await _settle(tailer, target, out="a\nb\n")
    await task
    assert sink.lines[("vm-late", "stdout")] == ["a", "b"] and not ref.truncated and out_tail == "a\nb"


async def test_without_a_sink_only_the_end_of_a_big_blob_is_read(store: OutputStore, writer: Writer) -> None:
    run_id, target = _run_id(), _target("vm-summary")
    pair = await store.prepare(run_id, target, expiry_s=3600)
    body = b"".join(b"%06d some output\n" % i for i in range(60_000))  # ~1 MiB
    await writer.append(pair.stdout_write_uri, body)
    tailer = Tailer(store, run_id, None)
    tailer.add(target)  # no sink: nothing is polled live
    assert tailer.tailed == 0
    before = store.stats.bytes_read
    ref, out_tail, _ = await _settle(tailer, target, out=body[-4096:].decode())
    assert ref.stdout_bytes == len(body) and not ref.truncated
    assert out_tail.splitlines() == [f"{i:06d} some output" for i in range(59_980, 60_000)]
    assert store.stats.bytes_read - before <= 70 * 1024


async def test_no_sas_signature_in_any_log_line(
    env: dict[str, str], factory: ClientFactory, writer: Writer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = await OutputStore.open(
        container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
        connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"],
    )  # fmt: skip
    run_id, target = _run_id(), _target("vm-secret")
    pair = await s.prepare(run_id, target, expiry_s=3600)
    sig = re.search(r"sig=([^&]+)", pair.stdout_write_uri)
    assert sig is not None
    await writer.append(pair.stdout_write_uri, b"out\n")
    notices: list[str] = []
    tailer = Tailer(s, run_id, Collect(), settle_s=0.1, notice=lambda t, text: notices.append(text))
    tailer.add(target)
    await asyncio.sleep(0.2)
    ref, _, _ = await _settle(tailer, target, out="different\n")
    await tailer.aclose()
    await s.aclose()
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(pair) + repr(ref) + "\n".join(notices)
    assert caplog.records  # the SDK did log
    assert sig.group(1) not in text and not SIG.search(text)


# -- azrun logs ------------------------------------------------------------------------------------
def _ledger_run(
    state_dir: Path, run_id: str, targets: list[Target], pairs: list[BlobPair], state: Any
) -> None:
    from azrun.ledger import Ledger
    from azrun.models import RunSpec

    with Ledger.open(state_dir) as ledger:
        ledger.create_run(run_id, spec=RunSpec(script="echo hi", script_name="inline"), targets=targets)
        for t, p in zip(targets, pairs, strict=True):
            ledger.update_target(
                run_id, t.resource_id, state=state, stdout_url=p.stdout_url, stderr_url=p.stderr_url
            )


def _set_state(state_dir: Path, run_id: str, target: Target, state: Any) -> None:
    from azrun.ledger import Ledger

    with Ledger.open(state_dir) as ledger:
        ledger.update_target(run_id, target.resource_id, state=state)


async def test_logs_reads_the_ledger_and_prints_what_a_run_streamed(
    env: dict[str, str],
    store: OutputStore,
    writer: Writer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azrun.cli import main
    from azrun.models import TargetState

    run_id = _run_id()
    targets = [_target("vm-l1"), _target("vmss-api/2")]
    pairs = [await store.prepare(run_id, t, expiry_s=600) for t in targets]
    await writer.append(pairs[0].stdout_write_uri, "a1\nä2\n".encode())
    await writer.append(pairs[0].stderr_write_uri, b"e1\n")
    await writer.append(pairs[1].stdout_write_uri, b"b1\nb2-no-newline")
    _ledger_run(Path(os.environ["AZRUN_STATE_DIR"]), run_id, targets, pairs, TargetState.SUCCEEDED)
    monkeypatch.delenv("AZRUN_OUTPUT_CONTAINER")  # the container comes from the ledger's URLs

    assert await asyncio.to_thread(main, ["logs"]) == 0  # the latest run
    assert capsys.readouterr().out == (
        "[vm-l1] (stdout) a1\n[vm-l1] (stdout) ä2\n[vm-l1] (stderr) e1\n"
        "[vmss-api/2] (stdout) b1\n[vmss-api/2] (stdout) b2-no-newline\n"
    )
    assert await asyncio.to_thread(main, ["logs", run_id, "--target", "VMSS-API/2", "--stdout"]) == 0
    assert capsys.readouterr().out == "b1\nb2-no-newline"  # raw bytes, as written
    assert await asyncio.to_thread(main, ["logs", run_id, "--stderr", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "target": "vm-l1", "id": targets[0].resource_id, "stream": "stderr", "line": "e1",
    }
    assert await asyncio.to_thread(main, ["logs", run_id, "--download", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "s" / "rg" / "vmss-api" / "2" / "stdout").read_bytes() == b"b1\nb2-no-newline"
    assert (tmp_path / "d" / "s" / "rg" / "vm-l1" / "stderr").read_bytes() == b"e1\n"
    assert await asyncio.to_thread(main, ["logs", run_id, "--target", "nope"]) == 3  # not found
    err = capsys.readouterr().err
    assert "no target named nope" in err and "vm-l1" in err


async def test_logs_follow_streams_until_the_ledger_says_done(
    env: dict[str, str], store: OutputStore, writer: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    from azrun.cli import main
    from azrun.models import TargetState

    run_id, target = _run_id(), _target("vm-follow")
    pair = await store.prepare(run_id, target, expiry_s=600)
    state_dir = Path(os.environ["AZRUN_STATE_DIR"])
    _ledger_run(state_dir, run_id, [target], [pair], TargetState.RUNNING)
    follower = asyncio.create_task(asyncio.to_thread(main, ["logs", run_id, "--follow"]))
    await writer.append(pair.stdout_write_uri, b"one\n")
    await asyncio.sleep(1.5)
    assert not follower.done()
    await writer.append(pair.stdout_write_uri, b"two\n")
    _set_state(state_dir, run_id, target, TargetState.SUCCEEDED)
    assert await asyncio.wait_for(follower, 30) == 0
    assert capsys.readouterr().out == "[vm-follow] (stdout) one\n[vm-follow] (stdout) two\n"


async def test_logs_for_a_run_without_blobs_says_why(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from azrun.cli import main
    from azrun.ledger import Ledger
    from azrun.models import RunSpec, TargetState

    # a run the ledger knows, that had no output storage: the ledger's tails are all there is
    run_id = _run_id()
    with Ledger.open(Path(os.environ["AZRUN_STATE_DIR"])) as ledger:
        ledger.create_run(run_id, spec=RunSpec(script="echo hi", script_name="inline"), targets=[_target("vm-x")])
        ledger.update_target(run_id, _target("vm-x").resource_id, state=TargetState.SUCCEEDED)
    assert await asyncio.to_thread(main, ["logs", run_id]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "has no output blobs" in err[0] and "azrun status" in err[1], err
    # a run nobody knows: "no such run", and no note about masking a run that does not exist
    assert await asyncio.to_thread(main, ["logs", _run_id()]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run" in err[0], err


async def test_logs_says_a_blob_is_short_and_shows_the_recorded_lines(
    env: dict[str, str], store: OutputStore, writer: Writer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 14 item 8: the run recorded at completion that the blob lacks the instance view's end."""
    from azrun.cli import main
    from azrun.models import TargetState

    run_id, target = _run_id(), _target("vm-short")
    pair = await store.prepare(run_id, target, expiry_s=600)
    await writer.append(pair.stdout_write_uri, b"one\ntwo\nthr")  # "ee\nfour\n" never arrived
    state_dir = Path(os.environ["AZRUN_STATE_DIR"])
    _ledger_run(state_dir, run_id, [target], [pair], TargetState.SUCCEEDED)
    from azrun.ledger import Ledger

    with Ledger.open(state_dir) as ledger:  # what the runner records from Tailer.complete
        ledger.update_target(run_id, target.resource_id, output_truncated=True, stdout_tail="one\ntwo\nthree\nfour")
    assert await asyncio.to_thread(main, ["logs", run_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["[vm-short] (stdout) one", "[vm-short] (stdout) two"]
    assert out[2].startswith("[vm-short] --- vm-short: the stdout blob is short") and "the 2 line(s)" in out[2]
    assert out[3:] == ["[vm-short] (stdout) three", "[vm-short] (stdout) four"]
    assert await asyncio.to_thread(main, ["logs", run_id, "--stdout"]) == 0
    raw = capsys.readouterr()
    assert raw.out == "one\ntwo\nthr" and "stdout blob is short" in raw.err
    # the late append arrives after all: nothing is short any more
    await writer.append(pair.stdout_write_uri, b"ee\nfour\n")
    assert await asyncio.to_thread(main, ["logs", run_id]) == 0
    assert "blob is short" not in capsys.readouterr().out


async def test_logs_masks_protected_values_and_downloads_privately(
    env: dict[str, str], store: OutputStore, writer: Writer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 14 item 14: what the live stream masks, logs / --stdout / --download mask too."""
    from azrun.cli import main
    from azrun.ledger import Ledger
    from azrun.models import RunSpec, TargetState
    from azrun.redact import secret_fingerprints

    secret = "s3cr3t-Pa55w0rd!"
    spec = RunSpec(script="echo hi", script_name="inline", protected_parameters=(("PW", secret),))
    run_id, target = _run_id(), _target("vm-echo")
    pair = await store.prepare(run_id, target, expiry_s=600)
    await writer.append(pair.stdout_write_uri, f"pw={secret}\nsplit {secret[:5]}".encode())
    await writer.append(pair.stdout_write_uri, f"{secret[5:]} end\nclean\n".encode())
    state_dir = Path(os.environ["AZRUN_STATE_DIR"])
    with Ledger.open(state_dir) as ledger:
        ledger.create_run(run_id, spec=spec, targets=[target], options=secret_fingerprints(spec))
        ledger.update_target(run_id, target.resource_id, state=TargetState.SUCCEEDED,
                             stdout_url=pair.stdout_url, stderr_url=pair.stderr_url)  # fmt: skip
    assert secret.encode() not in b"".join(p.read_bytes() for p in state_dir.rglob("*") if p.is_file())
    assert await asyncio.to_thread(main, ["logs", run_id]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "[vm-echo] (stdout) pw=***", "[vm-echo] (stdout) split *** end", "[vm-echo] (stdout) clean",
    ]
    assert await asyncio.to_thread(main, ["logs", run_id, "--stdout"]) == 0
    assert capsys.readouterr().out == "pw=***\nsplit *** end\nclean\n"
    dl = tmp_path / "dl"
    assert await asyncio.to_thread(main, ["logs", run_id, "--download", str(dl)]) == 0
    saved = dl / "s" / "rg" / "vm-echo" / "stdout"
    assert saved.read_bytes() == b"pw=***\nsplit *** end\nclean\n"
    assert saved.stat().st_mode & 0o777 == 0o600 and (dl / "s").stat().st_mode & 0o777 == 0o700
    assert (await store.download(store.name_from_url(pair.stdout_url), tmp_path / "raw")) > 0
    assert (tmp_path / "raw").stat().st_mode & 0o777 == 0o600


async def test_logs_follow_stops_when_nobody_drives_the_run(
    env: dict[str, str], store: OutputStore, writer: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14 item 12: a run whose driver is gone (here: interrupted) does not keep --follow forever."""
    from azrun.cli import main
    from azrun.ledger import Ledger
    from azrun.models import TargetState

    run_id, target = _run_id(), _target("vm-orphan")
    pair = await store.prepare(run_id, target, expiry_s=600)
    await writer.append(pair.stdout_write_uri, b"partial\n")
    state_dir = Path(os.environ["AZRUN_STATE_DIR"])
    _ledger_run(state_dir, run_id, [target], [pair], TargetState.RUNNING)
    with Ledger.open(state_dir) as ledger:
        ledger.set_run_status(run_id, "interrupted", ended=True)
    rc = await asyncio.wait_for(asyncio.to_thread(main, ["logs", run_id, "--follow"]), 30)
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == "[vm-orphan] (stdout) partial\n"
    assert "not being driven by any process" in captured.err and f"azrun resume {run_id}" in captured.err


async def test_logs_follow_stops_after_the_idle_timeout(
    env: dict[str, str], store: OutputStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver azrun cannot see (another host): --follow gives up after --idle-timeout, saying so."""
    import socket

    from azrun.cli import main
    from azrun.models import TargetState

    run_id, target = _run_id(), _target("vm-far")
    pair = await store.prepare(run_id, target, expiry_s=600)
    _ledger_run(Path(os.environ["AZRUN_STATE_DIR"]), run_id, [target], [pair], TargetState.RUNNING)
    monkeypatch.setattr(socket, "gethostname", lambda: "another-host")  # the ledger says: driven elsewhere
    rc = await asyncio.wait_for(asyncio.to_thread(main, ["logs", run_id, "--follow", "--idle-timeout", "1s"]), 30)
    assert rc == 0 and "no output and no state change" in capsys.readouterr().err


async def test_every_target_of_a_fleet_streams_live(store: OutputStore, writer: Writer) -> None:
    """Issue 16 item 3: the fleet's output port tailed only the first 20 targets live."""
    from azrun.fleet import FleetOptions
    from azrun.fleet._output import StoreOutput

    run_id = _run_id()
    targets = [_target(f"vm-live-{i:02d}") for i in range(25)]
    sink = Collect()
    port = StoreOutput(store, run_id, sink, max_tailed=FleetOptions().max_tailed)
    pairs = [await port.prepare(t, 600) for t in targets]
    for t in targets:
        port.attach(t)
    for p in pairs:
        await writer.append(p.stdout_write_uri, b"hello\n")
    for _ in range(100):  # every target's line arrives before any of them completes
        if all(sink.lines[(t.name, "stdout")] for t in targets):
            break
        await asyncio.sleep(0.1)
    await port.aclose()
    assert [t.name for t in targets if not sink.lines[(t.name, "stdout")]] == []


async def test_the_request_budget_stretches_polling_and_says_so(store: OutputStore, writer: Writer) -> None:
    run_id = _run_id()
    targets = [_target(f"vm-b{i:02d}") for i in range(20)]
    pairs = [await store.prepare(run_id, t, expiry_s=3600) for t in targets]
    sink, notices = Collect(), []
    tailer = Tailer(store, run_id, sink, poll_budget_rps=10.0, max_interval_s=1.0,
                    notice=lambda t, text: notices.append(text))  # fmt: skip
    for t in targets:
        tailer.add(t)  # 40 streams at 0.5 s want 80 polls/s
    await asyncio.sleep(1.0)
    before, began = store.stats.requests, asyncio.get_running_loop().time()
    await asyncio.sleep(3.0)
    rate = (store.stats.requests - before) / (asyncio.get_running_loop().time() - began)
    for p in pairs:
        await writer.append(p.stdout_write_uri, b"late line\n")
    for _ in range(150):
        if all(sink.lines[(t.name, "stdout")] for t in targets):
            break
        await asyncio.sleep(0.1)
    await tailer.aclose()
    assert rate <= 10.0 * 1.3, rate  # within the budget (jitter aside)
    assert tailer.stats.max_stretch > 1.5 and len(notices) == 1 and "within 10 storage requests/s" in notices[0]
    assert "polled only every 4s" in notices[0]  # 40 streams / 10 per second
    assert all(sink.lines[(t.name, "stdout")] == ["late line"] for t in targets)  # still live, just slower
