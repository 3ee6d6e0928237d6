"""Fleet knobs as small frozen objects: budgets (``N`` or ``N%``), poll policy, run options.

Percentages are relative to the number of targets the run will dispatch (not counting targets
skipped up front). Concurrency rounds **up** and is at least 1 (``10%`` of 15 -> 2); the error
budget rounds **down** (``10%`` of 15 -> 1), so a percentage never allows more errors than it
says. Like SSM, dispatching stops once the number of errors is *greater than* the budget:
``--max-errors 0`` stops at the first error; targets already in flight still finish.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from azrun.config import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_ERRORS, DEFAULT_START_TIMEOUT_S
from azrun.errors import ConfigError

if TYPE_CHECKING:
    from azrun.fleet._waves import WavePlan

__all__ = ["Budget", "FleetOptions", "PollPolicy"]

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True, slots=True)
class Budget:
    """A count or a percentage of the targets: ``Budget.parse("10%")``, ``Budget.parse(5)``."""

    value: float
    percent: bool = False

    @classmethod
    def parse(cls, raw: str | int | Budget, *, what: str = "budget") -> Budget:
        """A budget from ``N`` (a count) or ``N%`` (a share of the targets)."""
        if isinstance(raw, Budget):
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            if raw < 0:
                raise ConfigError(f"{what} must not be negative: {raw}", hint="use a number or a percentage")
            return cls(float(raw))
        found = _BUDGET.match(str(raw))
        if not found:
            raise ConfigError(f"{what} must be N or N%, got {raw!r}", hint="e.g. 50, 10%")
        value, pct = float(found.group(1)), bool(found.group(2))
        if pct and value > 100:
            raise ConfigError(f"{what} over 100%: {raw!r}", hint="use at most 100%")
        if not pct and value != int(value):
            raise ConfigError(f"{what} must be a whole number, got {raw!r}", hint="e.g. 50, 10%")
        return cls(value, pct)

    def concurrency(self, n_targets: int) -> int:
        """Resolve as a concurrency limit: percent rounds up, at least 1."""
        if self.percent:
            return max(1, math.ceil(self.value * n_targets / 100))
        return max(1, int(self.value))

    def errors(self, n_targets: int) -> int:
        """Resolve as an error budget: percent rounds down."""
        if self.percent:
            return math.floor(self.value * n_targets / 100)
        return int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """When to read a running target's instance view (ARM reads are the scarce resource).

    First poll at ``max(min_first_s, learned duration or initial_guess_s)`` after the PUT
    (learned: the 90th percentile of finished targets, at most 1.5 x their median). Then the
    interval grows by ``backoff`` (``growing_backoff`` while the output still grows: the script
    is busy) but stays under ``elapsed_fraction`` of the time run so far (doubled while growing),
    within [``min_interval_s``, ``max_interval_s``]; it is pulled in to just after the learned
    90th percentile, and never goes past the watchdog deadline. Polls of one subscription share
    a token bucket of ``read_share`` x the ARM read refill (burst ``burst``).

    Until ``learn_after`` targets have finished nothing is known about the script's duration:
    the first ``scouts`` targets dispatched are then polled every ``scout_interval_s`` (a few
    reads a second, for at most ``scout_window_s``) so that the estimate comes early; each time the estimate firms up, targets
    scheduled far past the learned 90th percentile are pulled in to the median.

    A target still running ``power_check_after_s`` past the learned 90th percentile (past its
    dispatch when nothing is learned) has its machine's power state read (one GET), and again
    every ``power_check_after_s``: a machine stopped or deallocated under a running script never
    reports completion, and should not hold the run until the watchdog.

    The VM agent reports status and output every ``agent_cadence_s`` (15 s on Azure): a target
    the agent has not started yet is read at most that often (or when the learned start latency
    says it should have started), and once the cadence is seen in the answers (changes spaced by
    it, with unchanged reads between) scouts and running targets are not read faster than it.
    Until an agent of the run is seen starting a script, only the scouts are read on that schedule;
    the other targets back off with their wait (up to ``start_wait_max_s``) and are pulled in when
    the first start is seen (a first run installs the handler for one to two minutes on every
    machine: reading each one every 15 s meanwhile tells nothing the scouts do not). A target not
    started yet has its power read only past ``unstarted_power_check_s`` (or the learned start
    latency's p90 if longer), then every ``power_check_after_s``.
    While Azure cannot be reached, a target's reads back off up to ``outage_max_interval_s``.
    """

    min_first_s: float = 1.0
    initial_guess_s: float = 2.0
    backoff: float = 1.5
    growing_backoff: float = 2.0
    elapsed_fraction: float = 0.15
    min_interval_s: float = 0.5
    max_interval_s: float = 20.0
    read_share: float = 0.8
    burst: float = 200.0
    max_inflight: int = 64
    learn_after: int = 3
    scouts: int = 3
    scout_interval_s: float = 1.0
    scout_window_s: float = 60.0
    power_check_after_s: float = 20.0  # as often as a quiet target is polled (issue 14, item 15: was 120 s)
    unstarted_power_check_s: float = 120.0  # a machine whose agent has not started the script yet
    start_wait_max_s: float = 60.0  # read interval of non-scouts while no agent of the run has started
    agent_cadence_s: float = 15.0
    outage_max_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.backoff < 1 or self.growing_backoff < 1:
            raise ConfigError("poll backoff factors must be >= 1")
        if not 0 < self.min_interval_s <= self.max_interval_s:
            raise ConfigError("poll intervals must satisfy 0 < min <= max")


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How a fleet run behaves; every field is stored in the ledger for resume.

    Args:
        max_concurrency: targets in Dispatching/Running at once (``N`` or ``N%``).
        max_errors: stop dispatching once errors exceed this (``N`` or ``N%``).
        canary: run on this many targets first and continue only if all succeed.
        keep: keep run command resources (default: delete each once its output is read).
        watchdog_grace_s: a target still Running ``timeout + grace`` after the agent-reported
            start is cancelled and marked TimedOut; ``None`` = max(60 s, 10 % of the timeout).
        start_timeout_s: a dispatched target whose script the agent has not started this long
            after the PUT is cancelled and Undeliverable ("never started"); 0 = no limit.
        delete_wait_s: how long a cancel waits for a DELETE's lasting operation (the run command
            is listed as Deleting meanwhile, and still counts toward the machine's 25).
        contact_limit_s: Azure unreachable this long with nothing left to watch: the run stops
            and is left ``interrupted`` (resume it once Azure answers again).
        waves: the rollout plan (:class:`~azrun.fleet.WavePlan`); ``canary`` is the plan
            ``N,100%`` with no error allowed in the first wave (give one or the other).
        retries: per-target retries of delivery failures (the agent never started the script,
            409 Conflict with another extension operation, 5xx, unreachable): a new run command
            per attempt, ``retry_backoff_s x 2^n`` apart. A script that ran and failed (or timed
            out) is retried only with ``retry_failed_scripts``.
        conflict_retries / conflict_backoff_s: 409 Conflict on PUT -> wait ``backoff * 2^n`` and retry.
        output_expiry_s: SAS lifetime of the output blobs (at least the timeout + grace).
        max_tailed: targets whose output is streamed live at once (None: every one, within the
            tailer's storage request budget).
    """

    max_concurrency: Budget = field(default_factory=lambda: Budget.parse(DEFAULT_MAX_CONCURRENCY))
    max_errors: Budget = field(default_factory=lambda: Budget.parse(DEFAULT_MAX_ERRORS))
    canary: int = 0
    keep: bool = False
    watchdog_grace_s: float | None = None
    conflict_retries: int = 5
    conflict_backoff_s: float = 2.0
    submit_retries: int = 2
    poll: PollPolicy = field(default_factory=PollPolicy)
    output_expiry_s: int = 24 * 3600
    max_tailed: int | None = None
    progress_interval_s: float = 1.0
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    delete_wait_s: float = 300.0
    contact_limit_s: float = 600.0
    waves: WavePlan | None = None
    retries: int = 0
    retry_failed_scripts: bool = False
    retry_backoff_s: float = 5.0

    @classmethod
    def make(
        cls,
        *,
        max_concurrency: str | int | Budget = DEFAULT_MAX_CONCURRENCY,
        max_errors: str | int | Budget = DEFAULT_MAX_ERRORS,
        **kwargs: Any,
    ) -> FleetOptions:
        """Options from the CLI-style values (``N``/``N%`` budgets); the rest keep their defaults."""
        if kwargs.get("canary", 0) < 0:
            raise ConfigError("--canary must not be negative")
        if kwargs.get("canary") and kwargs.get("waves") is not None:
            raise ConfigError("--canary and --waves together: the canary is the first wave",
                              hint="e.g. --waves 1,10%,100% --wave-max-errors 0")
        if int(kwargs.get("retries", 0) or 0) < 0:
            raise ConfigError("--retries must not be negative", hint="e.g. --retries 2")
        if float(kwargs.get("start_timeout_s", 0) or 0) < 0:
            raise ConfigError("--start-timeout must not be negative", hint="e.g. 15m; 0 = no limit")
        concurrency = Budget.parse(max_concurrency, what="--max-concurrency")
        if concurrency.value == 0:
            raise ConfigError(f"--max-concurrency {concurrency}: nothing could ever run",
                              hint="use at least 1 (or a percentage above 0%)")
        return cls(
            max_concurrency=concurrency,
            max_errors=Budget.parse(max_errors, what="--max-errors"),
            **kwargs,
        )

    def grace_s(self, timeout_s: int) -> float:
        """How long past ``timeout_s`` the watchdog waits before it calls a target TimedOut."""
        if self.watchdog_grace_s is not None:
            return self.watchdog_grace_s
        return max(60.0, 0.1 * timeout_s)

    def to_dict(self) -> dict[str, Any]:
        """The options as the ledger keeps them (JSON-ready)."""
        data = asdict(self)
        data["max_concurrency"] = str(self.max_concurrency)
        data["max_errors"] = str(self.max_errors)
        data["waves"] = None if self.waves is None else self.waves.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetOptions:
        """Options back from :meth:`to_dict` (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("poll"), dict):
            poll_known = set(PollPolicy.__dataclass_fields__)
            values["poll"] = PollPolicy(**{k: v for k, v in values["poll"].items() if k in poll_known})
        values["max_concurrency"] = Budget.parse(values.get("max_concurrency", DEFAULT_MAX_CONCURRENCY))
        values["max_errors"] = Budget.parse(values.get("max_errors", DEFAULT_MAX_ERRORS))
        if isinstance(values.get("waves"), dict):
            from azrun.fleet._waves import WavePlan

            values["waves"] = WavePlan.from_dict(values["waves"])
        return cls(**values)

    def plan(self) -> WavePlan | None:
        """The rollout plan in effect: ``waves``, or the canary's, or None (one wave)."""
        if self.waves is not None:
            return self.waves
        if self.canary:
            from azrun.fleet._waves import WavePlan

            return WavePlan.for_canary(self.canary)
        return None
