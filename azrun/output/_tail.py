"""Tailer: live output of many targets from their append blobs, and the final read at completion.

Reading (one request per poll): a ranged GET from the last offset, i.e. conditional on the size.
An unchanged blob costs one request with no body (Azure answers 416 ``InvalidRange`` with
``Content-Range: bytes */<size>``, Azurite an empty range), and new bytes arrive in the same
request that asks for them. No ETag condition is used: Azurite can answer a GET with the ETag of
an append that is not yet in the returned bytes (its metadata object is updated while the read is
in flight), so a later ``If-None-Match`` read would answer 304 while bytes are pending -- a lost
end of output. The size condition costs the same and cannot go stale. Reads take tokens from the
store's own storage bucket; ARM's budget is untouched.

Polling is adaptive per stream: right after new bytes the next poll comes ``min_interval_s``
later; each empty poll multiplies the interval by ``backoff`` up to ``max_interval_s``. A quiet
stderr therefore costs little while stdout streams. Each wait is jittered by +-``jitter`` (10 %)
so that targets added together do not poll the account in lock-step. At most ``max_tailed`` targets are tailed at
once (in the order they were added); the others wait for a slot, and any target still waiting
when it completes is read whole by :meth:`Tailer.complete` and printed then.

Re-created blobs: the guest agent creates-or-replaces each blob before it starts the script, so
a blob may be replaced under the reader. A creation time different from the one seen before, or
a size below the read offset, means "new blob": reading restarts at 0. Before anything was
printed (the normal case: azrun created the blob, the agent replaced it while still empty) that
is invisible. After lines were printed (the script ran again on the same blob) the lines are
printed again from the start, after a notice.

Completion (:meth:`Tailer.complete`): the target's blobs are read to the end, unfinished last
lines are flushed, and the instance view's ``output``/``error`` (its last 4 KB) is compared with
the end of the blob. A blob that does not (yet) hold the instance view's tail is re-read for up
to ``settle_s`` (bytes written at the last moment). Then, if the blob is empty or missing while
the instance view has output, the upload failed on the VM: azrun says so and falls back to the
instance view's text (printed through the sink too), flagged truncated; if it has bytes but not
the instance view's tail, a notice says its end is missing, and the result is flagged truncated
with its last lines taken from the instance view.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from azrun.models import OutputRef, Target
from azrun.output._lines import LineSplitter, TailLines, split_text
from azrun.output._store import STREAMS, Chunk, OutputStore, blob_name
from azrun.redact import redact

__all__ = ["Notice", "Sink", "TailStats", "Tailer"]

_LOG = logging.getLogger(__name__)

#: ``sink(target, "stdout" | "stderr", line)`` with the line's newline removed.
Sink = Callable[[Target, str, str], None]
#: ``notice(target, text)``: something the user should be told once (upload failed, ...).
Notice = Callable[[Target, str], None]

_RAW_TAIL_BYTES = 16 * 1024
#: Without a sink only the last lines are needed: completion reads at most this much of a blob.
_TAIL_WINDOW_BYTES = 64 * 1024
_FINAL_READ_ATTEMPTS = 3


@dataclass
class TailStats:
    """What the tailer did (for benchmarks and ``--verbose``)."""

    polls: int = 0
    polls_with_data: int = 0
    restarts: int = 0
    errors: int = 0
    lines: int = 0


@dataclass
class _Stream:
    kind: str  # "stdout" | "stderr"
    name: str  # blob name
    url: str
    offset: int = 0
    created: datetime | None = None
    emitted: bool = False
    seen: bool = False  # the blob existed at some read
    skip_fragment: bool = False  # reading starts mid-blob: the first line is a fragment
    interval: float = 0.0
    due: float = 0.0
    splitter: LineSplitter = field(default_factory=LineSplitter)
    tail: TailLines = field(default_factory=TailLines)
    raw_tail: bytearray = field(default_factory=bytearray)


@dataclass
class _Tail:
    target: Target
    streams: tuple[_Stream, _Stream]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    error_logged: bool = False


class Tailer:
    """Live tail of many targets' output blobs into ``sink``.

    Args:
        store: the run's :class:`OutputStore`.
        run_id: the run whose blobs are read.
        sink: called with each complete line, in order per target and stream; None (summary and
            quiet modes) prints nothing, tails nothing live, and reads only the end of each blob
            at completion (for the last lines; byte counts are still exact).
        max_tailed: targets tailed live at once; the rest wait for a free slot.
        clock: monotonic seconds (injected in tests).
        min_interval_s / max_interval_s: poll interval bounds per stream.
        backoff: factor the interval grows by after an empty poll.
        jitter: relative spread of each wait (0.1 = +-10 %); ``rng`` draws it (seed it in tests).
        settle_s: how long :meth:`complete` re-reads a blob that lacks the instance view's tail.
        notice: where user-facing notices go (default: a warning on the ``azrun.output`` logger).
        tail_lines: how many last lines results carry.
    """

    def __init__(
        self,
        store: OutputStore,
        run_id: str,
        sink: Sink | None,
        *,
        max_tailed: int = 50,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.5,
        max_interval_s: float = 5.0,
        backoff: float = 1.5,
        jitter: float = 0.1,
        rng: random.Random | None = None,
        settle_s: float = 2.0,
        notice: Notice | None = None,
        tail_lines: int = 20,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (
            max_tailed >= 0 and 0 < min_interval_s <= max_interval_s and backoff >= 1 and 0 <= jitter < 1
        ):
            raise ValueError("bad tailer settings")
        self._store = store
        self._run_id = run_id
        self._sink = sink
        self._max_tailed = max_tailed
        self._clock = clock
        self._min = min_interval_s
        self._max = max_interval_s
        self._backoff = backoff
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._settle_s = settle_s
        self._notice = notice or _log_notice
        self._tail_lines = tail_lines
        self._sleep = sleep
        self._tails: dict[str, _Tail] = {}
        self._waiting: dict[str, _Tail] = {}  # insertion order = promotion order
        self._active: set[str] = set()  # keys of targets tailed live
        self.stats = TailStats()

    @property
    def run_id(self) -> str:
        return self._run_id

    def __repr__(self) -> str:
        return f"Tailer(run={self._run_id!r}, tailed={self.tailed}, waiting={self.waiting})"

    @property
    def tailed(self) -> int:
        """Targets tailed live right now."""
        return len(self._active)

    @property
    def waiting(self) -> int:
        """Targets running but not tailed (no free slot): printed when they complete."""
        return len(self._waiting)

    # -- lifecycle ------------------------------------------------------------------------------
    def add(self, target: Target) -> None:
        """Start tailing ``target`` (call when it is Running); idempotent."""
        key = target.resource_id.lower()
        if key in self._tails:
            return
        tail = self._new_tail(target)
        self._tails[key] = tail
        if self._sink is None:
            return  # nothing to show live: completion reads what the results need
        if self.tailed < self._max_tailed:
            self._start(tail)
        else:
            self._waiting[key] = tail

    async def complete(self, target: Target, *, iv_output: str, iv_error: str) -> tuple[OutputRef, str, str]:
        """Read ``target``'s blobs to the end and cross-check them with the instance view.

        Returns:
            ``(OutputRef, stdout_tail, stderr_tail)``: clean URLs and byte counts, and the last
            ``tail_lines`` lines of each stream.
        """
        key = target.resource_id.lower()
        tail = self._tails.pop(key, None) or self._new_tail(target)
        self._waiting.pop(key, None)
        self._active.discard(key)
        await _stop(tail)
        self._promote()
        async with tail.lock:
            out, err = tail.streams
            truncated_out = await self._finish_stream(tail, out, iv_output)
            truncated_err = await self._finish_stream(tail, err, iv_error)
        ref = OutputRef(
            stdout_url=out.url,
            stderr_url=err.url,
            stdout_bytes=out.offset,
            stderr_bytes=err.offset,
            truncated=truncated_out or truncated_err,
        )
        return ref, out.tail.text(), err.tail.text()

    async def aclose(self) -> None:
        """Stop every tail task (blobs are left as they are)."""
        tails = list(self._tails.values())
        self._tails.clear()
        self._waiting.clear()
        self._active.clear()
        for tail in tails:
            await _stop(tail)

    # -- internals ------------------------------------------------------------------------------
    def _new_tail(self, target: Target) -> _Tail:
        streams = []
        for kind in STREAMS:
            name = blob_name(self._run_id, target, kind)
            streams.append(_Stream(kind, name, self._store.blob_url(name), tail=TailLines(self._tail_lines)))
        return _Tail(target, (streams[0], streams[1]))

    def _start(self, tail: _Tail) -> None:
        now = self._clock()
        for st in tail.streams:
            st.interval, st.due = self._min, now
        self._active.add(tail.target.resource_id.lower())
        tail.task = asyncio.create_task(self._loop(tail), name=f"azrun-tail-{tail.target.name}")

    def _promote(self) -> None:
        while self._waiting and self.tailed < self._max_tailed:
            key = next(iter(self._waiting))
            self._start(self._waiting.pop(key))

    async def _loop(self, tail: _Tail) -> None:
        """Poll each stream when it is due; sleep until the next one is."""
        while True:
            now = self._clock()
            for st in tail.streams:
                if st.due <= now:
                    await self._poll(tail, st)
            wake = min(st.due for st in tail.streams)
            await self._sleep(max(0.0, wake - self._clock()))

    async def _poll(self, tail: _Tail, st: _Stream) -> None:
        try:
            async with tail.lock:
                got = await self._drain(tail, st)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage hiccup: keep tailing, slower; complete() reads again
            self.stats.errors += 1
            if not tail.error_logged:
                tail.error_logged = True
                _LOG.warning("reading %s failed (will retry): %s", st.url, _describe(exc))
            got = False
        self.stats.polls += 1
        if got:
            self.stats.polls_with_data += 1
            st.interval = self._min
        else:
            st.interval = min(self._max, st.interval * self._backoff)
        spread = 1.0 + self._jitter * (2.0 * self._rng.random() - 1.0)
        st.due = self._clock() + st.interval * spread

    async def _drain(self, tail: _Tail, st: _Stream) -> bool:
        """Read every new byte of one stream; True when there were some."""
        got = False
        restarted = False
        while True:
            chunk = await self._store.read_chunk(st.name, st.offset)
            if chunk.status in ("unchanged", "missing"):
                return got
            st.seen = True
            if not restarted and self._recreated(st, chunk):
                restarted = True
                self._restart(tail, st)
                continue
            if chunk.created is not None:
                st.created = chunk.created
            if chunk.status == "eof":
                return got
            self._consume(tail, st, chunk.data)
            got = True
            if chunk.size is not None and st.offset >= chunk.size:
                return got  # caught up (else: more to read right away)

    @staticmethod
    def _recreated(st: _Stream, chunk: Chunk) -> bool:
        if chunk.size is not None and chunk.size < st.offset:
            return True
        return st.created is not None and chunk.created is not None and chunk.created != st.created

    def _restart(self, tail: _Tail, st: _Stream) -> None:
        self.stats.restarts += 1
        if st.emitted:
            self._notice(
                tail.target,
                f"{st.kind} of {tail.target.name} was re-created on the VM (did the script run again?): "
                "printing it again from the start",
            )
        st.offset, st.created, st.skip_fragment = 0, None, False
        st.splitter.reset()
        st.tail.clear()
        st.raw_tail.clear()

    async def _skip_to_window(self, st: _Stream) -> None:
        """Start the final read near the end of a big blob (one HEAD) when nothing is printed."""
        try:
            info = await self._store.blob_created(st.name)
        except Exception as exc:  # the drain that follows retries and reports
            _LOG.debug("size of %s unknown: %s", st.url, _describe(exc))
            return
        if info is not None and info[0] > _TAIL_WINDOW_BYTES:
            st.offset, st.created, st.skip_fragment = info[0] - _TAIL_WINDOW_BYTES, info[1], True

    def _consume(self, tail: _Tail, st: _Stream, data: bytes) -> None:
        st.offset += len(data)
        st.raw_tail += data
        if len(st.raw_tail) > _RAW_TAIL_BYTES:
            del st.raw_tail[: len(st.raw_tail) - _RAW_TAIL_BYTES]
        lines = st.splitter.feed(data)
        if st.skip_fragment and lines:
            st.skip_fragment = False
            lines = lines[1:]
        self._emit(tail.target, st, lines)

    def _emit(self, target: Target, st: _Stream, lines: list[str]) -> None:
        if not lines:
            return
        st.emitted = True
        st.tail.extend(lines)
        self.stats.lines += len(lines)
        if self._sink is not None:
            for line in lines:
                self._sink(target, st.kind, line)

    async def _finish_stream(self, tail: _Tail, st: _Stream, iv_text: str) -> bool:
        """Final read + flush + instance-view cross-check; True when the result is truncated."""
        if self._sink is None and st.offset == 0 and not st.seen:
            await self._skip_to_window(st)
        ok = await self._final_drain(tail, st)
        deadline = self._clock() + self._settle_s
        while ok and iv_text and not _contains_tail(st.raw_tail, iv_text):
            if self._clock() >= deadline:
                break
            await self._sleep(0.25)
            ok = await self._final_drain(tail, st)
        self._emit(tail.target, st, st.splitter.flush())
        if not iv_text:
            return False
        if st.offset == 0:
            why = "the blob is missing" if not st.seen else "the blob is empty"
            if not ok:
                why = "the blob could not be read"
            self._notice(
                tail.target,
                f"{tail.target.name}: {st.kind} did not reach {st.url} ({why}; did the upload fail on the VM?): "
                "showing the instance view's last 4 KB, which may be truncated",
            )
            lines = split_text(iv_text.encode("utf-8"))
            self._emit(tail.target, st, lines)
            return True
        if not _contains_tail(st.raw_tail, iv_text):
            self._notice(
                tail.target,
                f"{tail.target.name}: {st.url} lacks the end of the {st.kind} the instance view shows "
                "(the VM's last upload may have failed); its last lines come from the instance view",
            )
            st.tail.clear()
            st.tail.extend(split_text(iv_text.encode("utf-8")))
            return True
        return False

    async def _final_drain(self, tail: _Tail, st: _Stream) -> bool:
        """Drain with a few retries; False when the blob could not be read at all."""
        for attempt in range(_FINAL_READ_ATTEMPTS):
            try:
                await self._drain(tail, st)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                if attempt == _FINAL_READ_ATTEMPTS - 1:
                    _LOG.warning("reading %s failed: %s", st.url, _describe(exc))
                    return False
                await self._sleep(0.2 * (attempt + 1))
        return False


def _contains_tail(raw_tail: bytearray, iv_text: str) -> bool:
    """Does the blob's end hold the instance view's text (its last 4 KB, maybe cut mid-character)?"""
    want = iv_text.lstrip("\ufffd").strip()
    if not want:
        return True
    have = bytes(raw_tail).decode("utf-8", errors="replace")
    return want in have


async def _stop(tail: _Tail) -> None:
    task, tail.task = tail.task, None
    if task is None:
        return
    task.cancel()
    # asyncio.wait raises CancelledError only when we are cancelled ourselves, not the tail task
    await asyncio.wait({task})
    exc = None if task.cancelled() else task.exception()
    if exc is not None:  # the loop died earlier; complete() reads everything anyway
        _LOG.debug("tail of %s had stopped: %s", tail.target.name, _describe(exc))


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    head = " ".join(str(p) for p in (type(exc).__name__, status, code) if p)
    return redact(head)


def _log_notice(target: Target, text: str) -> None:
    _LOG.warning("%s", redact(text))
