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
so that targets added together do not poll the account in lock-step.

Every target streams live, within a storage request budget (``poll_budget_rps``, 100 polls/s by
default, half of the store's own 200 requests/s bucket so creating blobs and final reads keep
room). The demand is the sum over live streams of 1 / interval; while it is above the budget,
every interval is stretched by ``demand / budget`` (:attr:`Tailer.stretch`), so the total stays
at the budget however many targets run: 250 idle targets (2 streams every 5 s) fit unstretched,
1,000 idle ones are polled every 20 s. Short bursts (many targets starting at once, each polled
at ``min_interval_s`` at first) are stretched silently; when the targets are so many that even
quiet streams cannot be polled every ``max_interval_s`` within the budget, that is said once
through ``notice``. :attr:`TailStats.max_stretch` records the largest stretch.
``max_tailed`` (default: none) still caps live targets when a caller asks; targets beyond it wait
for a slot, are said once through ``notice``, and print whole at completion.

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
instance view's text (printed through the sink too), flagged truncated. If it has bytes but not
the instance view's tail, the VM's last append failed (the handler ignores that error, and it
never reaches the instance view): the end of the blob is spliced onto the instance view's text
(:func:`~azrun.output._lines.splice_tail`: where the blob's end overlaps it, the lines that follow
are exactly the lost ones; where they do not overlap, more than 4 KB was lost and the marker says
so), a marker line (:data:`MARKER_STREAM`) precedes the recovered lines, and the result is
flagged truncated (the blob is short) with its last lines including the recovered ones.
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
from azrun.output._lines import LineSplitter, TailLines, contains_tail, splice_tail, split_text
from azrun.output._store import STREAMS, Chunk, OutputStore, blob_name
from azrun.redact import redact

__all__ = ["MARKER_STREAM", "Notice", "Sink", "TailStats", "Tailer"]

_LOG = logging.getLogger(__name__)

#: ``sink(target, "stdout" | "stderr", line)`` with the line's newline removed.
Sink = Callable[[Target, str, str], None]
#: ``notice(target, text)``: something the user should be told once (upload failed, ...).
Notice = Callable[[Target, str], None]
#: The sink's ``stream`` for azrun's own marker lines among a target's output ("the lines below
#: come from the instance view"); printers show it apart from stdout and stderr.
MARKER_STREAM = "azrun"

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
    max_stretch: float = 1.0  # the largest interval stretch the request budget needed
    waited: int = 0  # targets that waited for a live slot (only with max_tailed)


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
    interval: float = 0.0  # unstretched
    due: float = 0.0
    live: bool = False  # counted in the tailer's demand
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
        max_tailed: targets tailed live at once (None: every one); the rest wait for a free slot.
        poll_budget_rps: live polls per second across every target; intervals stretch to fit.
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
        max_tailed: int | None = None,
        poll_budget_rps: float = 100.0,
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
            (max_tailed is None or max_tailed >= 0)
            and 0 < min_interval_s <= max_interval_s
            and backoff >= 1
            and 0 <= jitter < 1
            and poll_budget_rps > 0
        ):
            raise ValueError("bad tailer settings")
        self._store = store
        self._run_id = run_id
        self._sink = sink
        self._max_tailed = max_tailed
        self._budget = poll_budget_rps
        self._demand = 0.0  # polls/s the live streams would make unstretched
        self._stretch_told = False
        self._wait_told = False
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
    def stretch(self) -> float:
        """How much every poll interval is stretched to stay within ``poll_budget_rps`` (>= 1)."""
        return max(1.0, self._demand / self._budget)

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
        if self._max_tailed is None or self.tailed < self._max_tailed:
            self._start(tail)
            return
        self._waiting[key] = tail
        self.stats.waited += 1
        if not self._wait_told:
            self._wait_told = True
            self._notice(
                target, f"more than {self._max_tailed} targets are running: {target.name} and later ones "
                "wait for a live slot (max_tailed); their output prints when they finish",
            )  # fmt: skip

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
        self._forget(tail)
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
            self._forget(tail)

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
            st.interval, st.due, st.live = self._min, now, True
            self._demand += 1.0 / st.interval
        self._active.add(tail.target.resource_id.lower())
        tail.task = asyncio.create_task(self._loop(tail), name=f"azrun-tail-{tail.target.name}")

    def _forget(self, tail: _Tail) -> None:
        """Take a stopped target's streams out of the demand."""
        for st in tail.streams:
            if st.live:
                st.live = False
                self._demand = max(0.0, self._demand - 1.0 / st.interval)

    def _retime(self, st: _Stream, interval: float) -> None:
        if st.live:
            self._demand += 1.0 / interval - 1.0 / st.interval
        st.interval = interval

    def _promote(self) -> None:
        while self._waiting and (self._max_tailed is None or self.tailed < self._max_tailed):
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
            self._retime(st, self._min)
        else:
            self._retime(st, min(self._max, st.interval * self._backoff))
        stretch = self.stretch
        if stretch > self.stats.max_stretch:
            self.stats.max_stretch = stretch
        floor_s = 2 * self.tailed / self._budget  # every live stream at most this often
        if floor_s > self._max and not self._stretch_told:
            self._stretch_told = True
            self._notice(
                tail.target, f"{self.tailed} targets stream live: to stay within {self._budget:g} storage "
                f"requests/s each is polled only every {floor_s:.0f}s or so while quiet, so a line may take "
                "that long to show (all output still arrives)",
            )  # fmt: skip
        spread = 1.0 + self._jitter * (2.0 * self._rng.random() - 1.0)
        st.due = self._clock() + st.interval * stretch * spread

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
        """Final read + flush + instance-view cross-check; True when the blob lacks output."""
        if self._sink is None and st.offset == 0 and not st.seen:
            await self._skip_to_window(st)
        ok = await self._final_drain(tail, st)
        deadline = self._clock() + self._settle_s
        while ok and iv_text and not contains_tail(bytes(st.raw_tail), iv_text):
            if self._clock() >= deadline:
                break
            await self._sleep(0.25)
            ok = await self._final_drain(tail, st)
        name = tail.target.name
        if not iv_text or (st.offset and contains_tail(bytes(st.raw_tail), iv_text)):
            self._emit(tail.target, st, st.splitter.flush())
            return False
        if st.offset == 0:
            why = "the blob is missing" if not st.seen else "the blob is empty"
            if not ok:
                why = "the blob could not be read"
            self._mark(
                tail, f"{name}: {st.kind} did not reach {st.url} ({why}; did the upload fail on the VM?): "
                "the instance view's last 4 KB follow, which may be truncated",
            )  # fmt: skip
            self._emit(tail.target, st, split_text(iv_text.encode("utf-8")))
            return True
        missing, joined = splice_tail(bytes(st.raw_tail), iv_text)
        if joined:
            lines = [*st.splitter.feed(missing), *st.splitter.flush()]
            self._mark(
                tail, f"{name}: the VM's last upload of {st.kind} failed ({st.url} stops at byte {st.offset}): "
                f"the {len(lines)} line(s) below come from the instance view",
            )  # fmt: skip
        else:
            self._emit(tail.target, st, st.splitter.flush())
            lines = split_text(missing)
            self._mark(
                tail, f"{name}: the VM's last uploads of {st.kind} failed and more than the instance view's "
                f"4 KB is missing ({st.url} stops at byte {st.offset}): its last 4 KB follow; lines between are lost",
            )  # fmt: skip
        self._emit(tail.target, st, lines)
        return True

    def _mark(self, tail: _Tail, text: str) -> None:
        """A marker before lines that do not come from the blob: a :data:`MARKER_STREAM` line
        through the sink (so it stays in order with them), or a notice without a sink."""
        if self._sink is not None:
            self._sink(tail.target, MARKER_STREAM, f"--- {text} ---")
        else:
            self._notice(tail.target, text)

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
