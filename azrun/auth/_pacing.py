"""Pacing in front of the identity endpoint: per process and across processes on one machine.

IMDS allows a VM 20 token requests per second and 5 at once; beyond that it answers 429, and
all processes on the VM share those limits (twenty cron jobs starting at once). So every
request to the identity endpoint takes, in this order:

1. a slot of an in-process semaphore (threads of this process queue here, cheaply);
2. a machine-wide slot: one of ``imds-slot-<i>.lock`` files held locked;
3. its turn in the in-process :class:`~azrun.throttle.TokenBucket` (rate and burst);
4. its turn in a machine-wide GCRA schedule kept in ``imds-pacing.json``, read and written while
   holding ``imds-pacing.json.lock``.

The locks are ``filelock`` locks, the same code on every platform: ``fcntl.flock`` on Linux and
macOS, ``msvcrt.locking`` on Windows (Automation's Windows hybrid workers and sandboxes). Both
are operating-system locks on an open file: the OS drops them when the process dies, so a
crashed job never leaks a slot and never wedges the schedule. Each attempt opens its own lock
object, so two threads (or two limiters) of one process exclude each other like two processes.

The slot is taken before the rate turn so a request goes out the moment it is scheduled;
rate-then-slot would let requests that queued for a slot leave together. The files hold only
pacing state (a time stamp), never a token. They live in a private (0700) runtime directory:
``$AZRUN_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/azrun``, else ``%LOCALAPPDATA%\\azrun\\runtime``
on Windows, else ``<tmp>/azrun-<uid>``. If that directory cannot be used, pacing falls back to
this process alone. Times are ``time.monotonic()``: one clock for the whole machine on Linux,
macOS and Windows (since boot).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azrun.errors import ConfigError

__all__ = ["FileLimiter", "Pacer", "PacingConfig", "private_dir"]

_LOGGER = logging.getLogger(__name__)
_STATE_FILE = "imds-pacing.json"
_SLOT_FILE = "imds-slot-{}.lock"
_STATE_LOCK = _STATE_FILE + ".lock"


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """Limits for identity-endpoint requests (defaults: Azure's IMDS limits per VM).

    Attributes:
        rate_per_s: sustained requests per second (IMDS: 20).
        burst: requests allowed back to back before the rate applies.
        concurrency: requests in flight at once (IMDS: 5).
        runtime_dir: directory of the machine-wide limiter files; ``None`` = default place.
        cross_process: share the limits with other processes through the runtime dir.
        retry_total: retries after the first attempt (Microsoft: 5).
        retry_backoff_s: exponential backoff factor; azure-identity's 0.8 gives 0, 1.6, 3.2,
            6.4, 12.8 s (a 410 uses 2.5: at least 70 s in all, as IMDS asks). A ``Retry-After``
            header always wins.
        poll_s: how often a request waiting for a machine-wide slot looks again.
    """

    rate_per_s: float = 20.0
    burst: float = 5.0
    concurrency: int = 5
    runtime_dir: str | None = None
    cross_process: bool = True
    retry_total: int = 5
    retry_backoff_s: float = 0.8
    poll_s: float = 0.005

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and self.burst >= 1 and self.concurrency >= 1 and self.retry_total >= 0):
            raise ConfigError(
                f"bad identity-endpoint pacing: rate {self.rate_per_s}/s, burst {self.burst}, "
                f"concurrency {self.concurrency}, retries {self.retry_total}",
                hint="AZRUN_IMDS_RPS > 0, AZRUN_IMDS_BURST >= 1, AZRUN_IMDS_CONCURRENCY >= 1",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PacingConfig:
        """``AZRUN_IMDS_RPS``, ``_BURST``, ``_CONCURRENCY``, ``_RETRY_BACKOFF_S``, ``_CROSS_PROCESS``
        (0 disables) and ``AZRUN_RUNTIME_DIR`` / ``XDG_RUNTIME_DIR``."""
        defaults = cls()
        try:
            return cls(
                rate_per_s=float(environ.get("AZRUN_IMDS_RPS", defaults.rate_per_s)),
                burst=float(environ.get("AZRUN_IMDS_BURST", defaults.burst)),
                concurrency=int(environ.get("AZRUN_IMDS_CONCURRENCY", defaults.concurrency)),
                runtime_dir=runtime_dir_from_env(environ),
                cross_process=environ.get("AZRUN_IMDS_CROSS_PROCESS", "1").strip().lower() not in ("0", "false", "no"),
                retry_backoff_s=float(environ.get("AZRUN_IMDS_RETRY_BACKOFF_S", defaults.retry_backoff_s)),
            )
        except ValueError as exc:
            raise ConfigError(f"bad AZRUN_IMDS_* setting: {exc}", hint="use plain numbers, e.g. AZRUN_IMDS_RPS=20") from exc


def runtime_dir_from_env(environ: Mapping[str, str]) -> str:
    """Where machine-wide limiter files live for this user."""
    if environ.get("AZRUN_RUNTIME_DIR"):
        return environ["AZRUN_RUNTIME_DIR"]
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "azrun")
    local = environ.get("LOCALAPPDATA")
    if sys.platform == "win32" and local:
        return os.path.join(local, "azrun", "runtime")
    return _fallback_runtime_dir()


def _fallback_runtime_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"azrun-{_uid()}")


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def private_dir(path: Path) -> bool:
    """Create ``path`` (0700) if needed; True if it is a directory only this user controls."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
        if not path.is_dir() or path.is_symlink() or st.st_uid != _uid():
            return False
        if st.st_mode & 0o077:
            path.chmod(0o700)
        return True
    except OSError:
        return False


class FileLimiter:
    """Machine-wide rate (GCRA over a state file) and concurrency (slot lock files).

    Every process pointed at the same directory shares these limits (see the module docstring
    for the locks). Times are ``time.monotonic()``, one clock for the whole machine.
    """

    __slots__ = ("_burst_s", "_clock", "_dir", "_held", "_held_lock", "_interval", "_poll_s", "_sleep", "_slots")

    def __init__(
        self,
        directory: Path,
        *,
        rate_per_s: float,
        burst: float,
        concurrency: int,
        poll_s: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._dir = directory
        self._interval = 1.0 / rate_per_s
        self._burst_s = (burst - 1.0) * self._interval  # GCRA tolerance
        self._slots = concurrency
        self._poll_s = poll_s
        self._clock = clock
        self._sleep = sleep
        self._held: set[Any] = set()  # the filelock locks this process holds now
        self._held_lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._dir

    def reserve(self) -> float:
        """Book the next machine-wide send time; return the seconds to wait for it."""
        with self._locked(self._dir / _STATE_LOCK):
            path = self._dir / _STATE_FILE
            now = self._clock()
            tat = _read_tat(path)
            if tat is None or not now - 3600.0 < tat < now + 3600.0:
                tat = now  # missing, corrupt, or from before a reboot (the clock restarted)
            tat = max(tat, now)
            send_at = max(now, tat - self._burst_s)
            _write_private(path, json.dumps({"tat": tat + self._interval, "clock": "monotonic"}).encode())
        return send_at - now

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        """Hold one of the machine's ``concurrency`` request slots; yields its index."""
        first = random.randrange(self._slots)
        while True:
            for i in range(self._slots):
                index = (first + i) % self._slots
                lock = self._try_lock(self._dir / _SLOT_FILE.format(index))
                if lock is not None:
                    try:
                        yield index
                    finally:
                        self._release(lock)
                    return
            self._sleep(self._poll_s * (0.5 + random.random()))

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        import filelock

        lock = filelock.FileLock(str(path), mode=0o600, thread_local=False)
        lock.acquire()
        self._track(lock)
        try:
            yield
        finally:
            self._release(lock)

    def _try_lock(self, path: Path) -> Any | None:
        import filelock

        lock = filelock.FileLock(str(path), mode=0o600, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return None
        self._track(lock)
        return lock

    def _track(self, lock: Any) -> None:
        with self._held_lock:
            self._held.add(lock)

    def _release(self, lock: Any) -> None:
        with self._held_lock:
            self._held.discard(lock)
        lock.release()  # unlocks explicitly (not only by closing): a forked child's copy cannot keep it

    def close_inherited(self) -> None:
        """In a forked child: close the parent's open lock files (best effort).

        The parent releases its locks explicitly, so the child's inherited copies cannot keep a
        slot; closing them means a parent that dies mid-request does not leave its slot held
        for as long as the child lives.
        """
        self._held_lock = threading.Lock()
        for lock in list(self._held):
            fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
            if isinstance(fd, int):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._held.clear()


def _read_tat(path: Path) -> float | None:
    try:
        data = json.loads(path.read_bytes()[:4096] or b"null")
        return float(data["tat"]) if isinstance(data, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, payload: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(payload)


class Pacer:
    """Everything one process puts in front of identity-endpoint requests.

    Use ``with pacer.turn(): send()``. Thread-safe; one per process (see the registry).
    """

    def __init__(self, config: PacingConfig, *, files: FileLimiter | None = None) -> None:
        from azrun.throttle import TokenBucket  # lazily: throttle may pull in azure.core

        self.config = config
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._bucket = TokenBucket(config.burst, config.rate_per_s, name="identity-endpoint")
        self.files = files
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent = 0

    @classmethod
    def from_config(cls, config: PacingConfig) -> Pacer:
        """A pacer with the machine-wide limiter when the runtime dir is usable."""
        files = None
        if config.cross_process:
            directory = Path(config.runtime_dir or _fallback_runtime_dir())
            if private_dir(directory):
                files = FileLimiter(
                    directory,
                    rate_per_s=config.rate_per_s,
                    burst=config.burst,
                    concurrency=config.concurrency,
                    poll_s=config.poll_s,
                )
            else:
                _LOGGER.warning(
                    "identity-endpoint pacing is per process only: %s is not a private directory", directory
                )
        return cls(config, files=files)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for a slot and a rate turn, then let one request out."""
        with self._slots, self.files.slot() if self.files else contextlib.nullcontext():
            self._bucket.acquire()
            if self.files is not None:
                delay = self.files.reserve()
                if delay > 0:
                    time.sleep(delay)
            with self._count_lock:
                self.in_flight += 1
                self.sent += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                with self._count_lock:
                    self.in_flight -= 1

    def __repr__(self) -> str:
        where = f"files={str(self.files.directory)!r}" if self.files else "process-only"
        return (
            f"Pacer({self.config.rate_per_s:g}/s, burst={self.config.burst:g}, "
            f"concurrency={self.config.concurrency}, {where}, in_flight={self.in_flight}, sent={self.sent})"
        )
