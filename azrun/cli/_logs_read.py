"""``azrun logs``: a run's full output from its blobs, at any later time.

The blob is the source of truth, so what this prints is what the run streamed: the same lines
through the same :class:`LineSplitter` and printers. Three ways to read:

* :func:`print_logs` -- every selected target's output once, target by target (stdout, then stderr);
* :func:`copy_raw` -- one blob's bytes unchanged (``azrun logs RUN --target X --stdout > file``);
* :func:`follow_logs` -- a :class:`Tailer` over the targets still running, until the ledger says
  they are done;
* :func:`download_logs` -- every target's blobs saved as files ``DIR/<target path>/stdout|stderr``
  (the blob layout: ``<subscription>/<resource group>/<vm>[/<instance>]``, unique per machine).

The list of targets comes from the caller (the CLI reads it from the ledger, or lists the run's
blobs when the ledger does not know the run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from azrun.errors import OutputError
from azrun.models import Target, TargetKind
from azrun.output import STREAMS, LineSplitter, OutputStore, RunBlob, Sink, Tailer, blob_name

__all__ = [
    "LoggedTarget",
    "container_of",
    "copy_raw",
    "download_logs",
    "follow_logs",
    "print_logs",
    "targets_from_blobs",
]


@dataclass(frozen=True, slots=True)
class LoggedTarget:
    """A target of a past (or running) run, as ``azrun logs`` sees it."""

    target: Target
    stdout_url: str | None = None
    stderr_url: str | None = None
    finished: bool = True

    def url(self, stream: str) -> str | None:
        return self.stdout_url if stream == "stdout" else self.stderr_url


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


async def print_logs(
    store: OutputStore,
    run_id: str,
    targets: Sequence[LoggedTarget],
    sink: Sink,
    *,
    streams: Sequence[str] = STREAMS,
) -> int:
    """Print each target's output through ``sink``; return the number of lines printed.

    Blobs are read chunk by chunk, so a large output is never held whole in memory.
    """
    printed = 0
    for lt in targets:
        for stream in streams:
            if lt.url(stream) is None and lt.target.resource_id.startswith("blob:"):
                continue
            splitter = LineSplitter()
            offset = 0
            name = _name(store, run_id, lt, stream)
            while True:
                chunk = await store.read_chunk(name, offset)
                if chunk.status != "data":
                    break
                offset += len(chunk.data)
                for line in splitter.feed(chunk.data):
                    sink(lt.target, stream, line)
                    printed += 1
                if chunk.size is not None and offset >= chunk.size:
                    break
            for line in splitter.flush():
                sink(lt.target, stream, line)
                printed += 1
    return printed


async def copy_raw(store: OutputStore, run_id: str, lt: LoggedTarget, stream: str, out: BinaryIO) -> int:
    """Write one blob's bytes to ``out`` unchanged; return the byte count."""
    name = _name(store, run_id, lt, stream)
    offset = 0
    while True:
        chunk = await store.read_chunk(name, offset)
        if chunk.status == "missing":
            raise OutputError(f"no {stream} blob for {lt.target.name} in run {run_id}")
        if chunk.status != "data":
            break
        out.write(chunk.data)
        offset += len(chunk.data)
        if chunk.size is not None and offset >= chunk.size:
            break
    out.flush()
    return offset


def _safe_relative(name: str) -> Path:
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    if not parts:
        raise OutputError(f"blob {name!r} cannot be used as a file name")
    return Path(*parts)


async def download_logs(
    store: OutputStore, run_id: str, targets: Sequence[LoggedTarget], directory: Path
) -> list[tuple[Path, int]]:
    """Save every target's blobs as ``directory/<target path>/stdout|stderr`` (the blob's name under
    the run, so two machines never write one file); return (path, bytes)."""
    saved: list[tuple[Path, int]] = []
    for lt in targets:
        for stream in STREAMS:
            if lt.url(stream) is None and lt.target.resource_id.startswith("blob:"):
                continue
            name = _name(store, run_id, lt, stream)
            relative = name[len(run_id) + 1 :] if name.startswith(f"{run_id}/") else name
            path = directory / _safe_relative(relative)
            saved.append((path, await store.download(name, path)))
    return saved


async def follow_logs(
    store: OutputStore,
    run_id: str,
    refresh: Callable[[], Awaitable[Sequence[LoggedTarget]]],
    sink: Sink,
    *,
    poll_s: float = 2.0,
    max_tailed: int = 50,
) -> None:
    """Tail every target until ``refresh()`` reports all of them finished.

    Targets already finished are printed whole at once; running ones stream. ``refresh`` is
    asked every ``poll_s`` seconds (the CLI re-reads the ledger).
    """
    tailer = Tailer(store, run_id, sink, max_tailed=max_tailed)
    done: set[str] = set()
    try:
        while True:
            current = await refresh()
            for lt in current:
                key = lt.target.resource_id.lower()
                if key in done:
                    continue
                if lt.finished:
                    done.add(key)
                    await tailer.complete(lt.target, iv_output="", iv_error="")
                else:
                    tailer.add(lt.target)
            if current and len(done) >= len(current):
                return
            await asyncio.sleep(poll_s)
    finally:
        await tailer.aclose()
