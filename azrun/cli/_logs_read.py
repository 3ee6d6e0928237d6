"""``azrun logs``: a run's full output from its blobs, at any later time.

The blob is the source of truth, so what this prints is what the run streamed: the same lines
through the same :class:`LineSplitter` and printers. Four ways to read:

* :func:`print_logs` -- every selected target's output once, target by target (stdout, then stderr);
* :func:`copy_raw` -- one blob's bytes (``azrun logs RUN --target X --stdout > file``);
* :func:`follow_logs` -- a :class:`Tailer` over the targets still running, until every one is
  final, nobody drives the run any more, or nothing happened for ``idle_s``;
* :func:`download_logs` -- every target's blobs saved as files ``DIR/<target path>/stdout|stderr``
  (the blob layout: ``<subscription>/<resource group>/<vm>[/<instance>]``, unique per machine),
  each file 0600 (directories 0700): output may hold what a script should not have printed.

Secrets: protected values a script echoed are masked (``***``) in every one of these, as the
live stream masks them, by the run's :class:`~azrun.redact.SecretFingerprints` (salted hashes
kept in the ledger; no value is stored). A run the ledger does not know cannot be masked that way.

Short blobs (issue 14 item 8): when the run found at completion that a blob lacked the end the
instance view showed (the VM's last append failed), the ledger has ``output_truncated`` and the
last lines it recorded from the instance view. Reading the blob, ``logs`` re-checks its end
against those lines (an append that arrived later clears it) and, when they are still missing,
prints them after a marker line; raw and download modes say so on stderr.

The list of targets comes from the caller (the CLI reads it from the ledger, or lists the run's
blobs when the ledger does not know the run).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from azrun.errors import OutputError
from azrun.models import Target, TargetKind
from azrun.output import (
    MARKER_STREAM,
    STREAMS,
    LineSplitter,
    OutputStore,
    RunBlob,
    Sink,
    Tailer,
    blob_name,
    contains_tail,
    splice_tail,
    split_text,
)
from azrun.redact import ByteMasker, SecretFingerprints

__all__ = [
    "FollowState",
    "LoggedTarget",
    "container_of",
    "copy_raw",
    "download_logs",
    "follow_logs",
    "print_logs",
    "targets_from_blobs",
]

_END_BYTES = 16 * 1024  # what is kept of a blob's end to check it against the recorded tail
Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LoggedTarget:
    """A target of a past (or running) run, as ``azrun logs`` sees it."""

    target: Target
    stdout_url: str | None = None
    stderr_url: str | None = None
    finished: bool = True
    truncated: bool = False  # the run found a blob short at completion (ledger output_truncated)
    stdout_tail: str = field(default="", repr=False)  # last lines recorded at completion
    stderr_tail: str = field(default="", repr=False)

    def url(self, stream: str) -> str | None:
        return self.stdout_url if stream == "stdout" else self.stderr_url

    def tail(self, stream: str) -> str:
        return self.stdout_tail if stream == "stdout" else self.stderr_tail


@dataclass(frozen=True, slots=True)
class FollowState:
    """What ``--follow`` learns at each refresh: the targets, and whether anybody drives the run
    (``None``: cannot tell, e.g. the driver is on another host)."""

    targets: Sequence[LoggedTarget]
    driven: bool | None = None


def container_of(url: str, run_id: str) -> str:
    """The container URL of a blob URL ``<container>/<run id>/<target>/<stream>``."""
    clean = url.split("?", 1)[0]
    marker = f"/{quote(run_id, safe='~')}/"
    cut = clean.find(marker)
    if cut <= 0:
        raise OutputError(f"{clean} is not an output blob of run {run_id}")
    return clean[:cut]


_GUID_LEN = 36


def _placeholder(path: str) -> Target:
    """A target known only by its blob path (``sub/rg/vm[/instance]``, or an older run's name)."""
    parts = path.split("/")
    if len(parts) >= 3 and len(parts[0]) == _GUID_LEN and parts[0].count("-") == 4:
        sub, rg, rest = parts[0], parts[1], parts[2:]
        return Target(
            resource_id=f"blob:{path}", name="/".join(rest), kind=TargetKind.VM, subscription_id=sub,
            resource_group=rg, location="", os="unknown", power_state="unknown",
        )  # fmt: skip
    return Target(
        resource_id=f"blob:{path}", name=path, kind=TargetKind.VM, subscription_id="", resource_group="",
        location="", os="unknown", power_state="unknown",
    )  # fmt: skip


def targets_from_blobs(blobs: Sequence[RunBlob]) -> list[LoggedTarget]:
    """Targets found by listing a run's blobs (when the ledger does not know the run)."""
    found: dict[str, dict[str, str]] = {}
    for b in blobs:
        found.setdefault(b.path, {})[b.stream] = b.url
    return [
        LoggedTarget(_placeholder(path), urls.get("stdout"), urls.get("stderr"), finished=True)
        for path, urls in found.items()
    ]


def _name(store: OutputStore, run_id: str, lt: LoggedTarget, stream: str) -> str:
    url = lt.url(stream)
    return store.name_from_url(url) if url else blob_name(run_id, lt.target, stream)


def _skip(lt: LoggedTarget, stream: str) -> bool:
    return lt.url(stream) is None and lt.target.resource_id.startswith("blob:")


def _masker(fingerprints: SecretFingerprints | None) -> ByteMasker | None:
    return fingerprints.masker() if fingerprints else None


async def _read(
    store: OutputStore, name: str, write: Callable[[bytes], object], masker: ByteMasker | None
) -> tuple[bool, int, bytes]:
    """Stream blob ``name`` (masked) into ``write``: (it exists, bytes read, its masked end)."""
    offset = 0
    end = bytearray()

    def put(data: bytes) -> None:
        if data:
            write(data)
            end.extend(data)
            if len(end) > _END_BYTES:
                del end[: len(end) - _END_BYTES]

    while True:
        chunk = await store.read_chunk(name, offset)
        if chunk.status == "missing":
            return False, 0, b""
        if chunk.status != "data":
            break
        offset += len(chunk.data)
        put(masker.feed(chunk.data) if masker else chunk.data)
        if chunk.size is not None and offset >= chunk.size:
            break
    if masker:
        put(masker.flush())
    return True, offset, bytes(end)


def _shortfall(lt: LoggedTarget, stream: str, end: bytes) -> tuple[bytes, bool] | None:
    """``(missing bytes, joined)`` when the ledger says this blob is short and it still is."""
    recorded = lt.tail(stream)
    if not lt.truncated or not recorded.strip() or contains_tail(end, recorded):
        return None
    return splice_tail(end, recorded)


def _short_text(lt: LoggedTarget, stream: str, lines: int, joined: bool) -> str:
    head = (
        f"{lt.target.name}: the {stream} blob is short (at completion the run found it lacks the end the "
        "instance view showed: the VM's last upload failed)"
    )
    if joined:
        return f"{head}; the {lines} line(s) below come from the ledger's record of the instance view"
    return f"{head}; the last {lines} line(s) the ledger recorded follow, lines between are lost"


async def print_logs(
    store: OutputStore,
    run_id: str,
    targets: Sequence[LoggedTarget],
    sink: Sink,
    *,
    streams: Sequence[str] = STREAMS,
    fingerprints: SecretFingerprints | None = None,
) -> int:
    """Print each target's output through ``sink`` (masked); return the number of lines printed.

    Blobs are read chunk by chunk, so a large output is never held whole in memory. Each
    stream is printed whole and in order, stdout first: the two blobs share no clock, so how
    their lines interleaved on the VM is not known.
    """
    printed = 0
    for lt in targets:
        for stream in streams:
            if not _skip(lt, stream):
                printed += await _print_stream(store, _name(store, run_id, lt, stream), lt, stream, sink, fingerprints)
    return printed


async def _print_stream(
    store: OutputStore, name: str, lt: LoggedTarget, stream: str, sink: Sink, fingerprints: SecretFingerprints | None
) -> int:
    splitter = LineSplitter()
    printed = 0

    def emit(lines: list[str]) -> None:
        nonlocal printed
        for line in lines:
            sink(lt.target, stream, line)
        printed += len(lines)

    _, _, end = await _read(store, name, lambda d: emit(splitter.feed(d)), _masker(fingerprints))
    short = _shortfall(lt, stream, end)
    if short is None:
        emit(splitter.flush())
        return printed
    missing, joined = short
    if joined:
        lines = [*splitter.feed(missing), *splitter.flush()]
    else:
        emit(splitter.flush())
        lines = split_text(missing)
    sink(lt.target, MARKER_STREAM, f"--- {_short_text(lt, stream, len(lines), joined)} ---")
    emit(lines)
    return printed


async def copy_raw(
    store: OutputStore,
    run_id: str,
    lt: LoggedTarget,
    stream: str,
    out: BinaryIO,
    *,
    fingerprints: SecretFingerprints | None = None,
    warn: Warn | None = None,
) -> int:
    """Write one blob's bytes to ``out`` (protected values masked); return the bytes read.

    A short blob (see the module docstring) is said on ``warn``, never mixed into the bytes.
    """
    exists, size, end = await _read(store, _name(store, run_id, lt, stream), out.write, _masker(fingerprints))
    if not exists:
        raise OutputError(f"no {stream} blob for {lt.target.name} in run {run_id}")
    out.flush()
    short = _shortfall(lt, stream, end)
    if short is not None and warn is not None:
        warn(f"{lt.target.name}: the {stream} blob is short (the VM's last upload failed): "
             "`azrun logs` without --stdout/--stderr shows the lines recorded from the instance view")  # fmt: skip
    return size


def _safe_relative(name: str) -> Path:
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    if not parts:
        raise OutputError(f"blob {name!r} cannot be used as a file name")
    return Path(*parts)


def _private_file(path: Path, top: Path) -> BinaryIO:
    """``path`` opened for writing, 0600, its new parent directories (up to ``top``) 0700."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists() and top in (p, *p.parents)]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


async def download_logs(
    store: OutputStore,
    run_id: str,
    targets: Sequence[LoggedTarget],
    directory: Path,
    *,
    fingerprints: SecretFingerprints | None = None,
    warn: Warn | None = None,
) -> list[tuple[Path, int]]:
    """Save every target's blobs as ``directory/<target path>/stdout|stderr`` (the blob's name under
    the run, so two machines never write one file), masked, 0600; return (path, bytes read)."""
    saved: list[tuple[Path, int]] = []
    for lt in targets:
        for stream in STREAMS:
            if _skip(lt, stream):
                continue
            name = _name(store, run_id, lt, stream)
            relative = name[len(run_id) + 1 :] if name.startswith(f"{run_id}/") else name
            path = directory / _safe_relative(relative)
            with _private_file(path, directory) as out:
                exists, size, end = await _read(store, name, out.write, _masker(fingerprints))
            if not exists:
                path.unlink(missing_ok=True)
                raise OutputError(f"no output blob {store.blob_url(name)}")
            if _shortfall(lt, stream, end) is not None and warn is not None:
                warn(f"{path}: the blob is short (the VM's last upload failed); `azrun logs` shows the lines "
                     "recorded from the instance view")  # fmt: skip
            saved.append((path, size))
    return saved


async def follow_logs(
    store: OutputStore,
    run_id: str,
    refresh: Callable[[], Awaitable[FollowState]],
    sink: Sink,
    *,
    poll_s: float = 2.0,
    idle_s: float = 600.0,
    fingerprints: SecretFingerprints | None = None,
    notice: Warn | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Tail every target until it is final; return why following ended.

    Targets already finished are printed whole at once; running ones stream. ``refresh`` is
    asked every ``poll_s`` seconds (the CLI re-reads the ledger). Following ends when

    * every target is final (``"done"``);
    * nobody drives the run any more (``refresh`` says ``driven=False``: its driver died or it
      was interrupted) -- what the blobs hold is printed first (``"undriven"``);
    * no line arrived and no target changed state for ``idle_s`` (``"idle"``: e.g. a driver on
      another host that azrun cannot see).

    ``notice`` is told why, in one line, unless every target finished.
    """
    masker = fingerprints.masker() if fingerprints else None
    activity = clock()

    def masked(target: Target, stream: str, line: str) -> None:
        nonlocal activity
        activity = clock()
        if masker is not None:
            line = (masker.feed(line.encode("utf-8")) + masker.flush()).decode("utf-8", errors="replace")
        sink(target, stream, line)

    tail = Tailer(store, run_id, masked)
    done: set[str] = set()
    states: dict[str, bool] = {}
    try:
        while True:
            state = await refresh()
            for lt in state.targets:
                key = lt.target.resource_id.lower()
                if states.get(key) != lt.finished:
                    states[key], activity = lt.finished, clock()
                if key in done or not lt.finished:
                    if key not in done:
                        tail.add(lt.target)
                    continue
                done.add(key)
                await tail.complete(lt.target, iv_output=lt.stdout_tail if lt.truncated else "",
                                    iv_error=lt.stderr_tail if lt.truncated else "")  # fmt: skip
            left = [lt for lt in state.targets if lt.target.resource_id.lower() not in done]
            if state.targets and not left:
                return "done"
            if state.driven is False:
                for lt in left:
                    await tail.complete(lt.target, iv_output="", iv_error="")
                if notice is not None:
                    notice(f"run {run_id} is not being driven by any process and {len(left)} target(s) are not "
                           f"final: stopped following (`azrun resume {run_id}` re-attaches to it)")  # fmt: skip
                return "undriven"
            if clock() - activity >= idle_s:
                if notice is not None:
                    notice(f"no output and no state change in run {run_id} for {idle_s:.0f}s: stopped following "
                           "(run `azrun logs --follow` again to keep watching)")  # fmt: skip
                return "idle"
            await asyncio.sleep(poll_s)
    finally:
        await tail.aclose()
