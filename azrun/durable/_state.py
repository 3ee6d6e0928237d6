"""What a shard orchestration carries from tick to tick (plain JSON; no I/O, no clock).

A *shard* is one subscription of a run. Its state names targets by their index in the shard's
target list (``targets/<shard>.jsonl``), so it stays small: a cursor, the window in flight
(index + when its PUT was answered, for the watchdog), the finished ones whose run commands the
next tick deletes, and counters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ShardState", "TickReport"]


@dataclass
class ShardState:
    run_id: str
    shard: int
    subscription: str
    total: int
    container: str
    window: int
    max_errors: int
    tick_s: float = 10.0
    poll_s: float = 2.0
    blob_identity: str | None = None
    keep: bool = False
    ticks_per_execution: int = 16  # continue_as_new after this many ticks (bounded history)
    cursor: int = 0
    inflight: list[list[float]] = field(default_factory=list)  # [index, PUT answered (epoch s)]
    to_delete: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    requests: int = 0
    throttled: int = 0
    tick: int = 0
    stop_reason: str | None = None
    # the subscription's budget handed down to the next tick (see azrun.durable._budget):
    # bucket name -> tokens left when the last tick ended, at ``budget_at`` (epoch s), on ``last_worker``
    last_worker: str = ""
    budget: dict[str, float] = field(default_factory=dict)
    budget_at: float = 0.0
    cancel: bool = False
    detach: bool = False
    wave: int = 0  # the rollout wave this shard belongs to (0 without --waves)
    first_bad: str = ""  # the first target that did not succeed ("name: state"), for the canary's message

    @property
    def finished(self) -> bool:
        """Every target recorded (dispatched and ended, or skipped), nothing in flight, nothing to
        clean up. A stopped, canceled or detached shard records its undispatched targets as
        Skipped in its next tick (so a shard started stopped still runs one tick)."""
        return self.cursor >= self.total and not self.inflight and not self.to_delete

    @property
    def instance_id(self) -> str:
        return shard_instance_id(self.run_id, self.shard)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardState:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def summary(self) -> dict[str, Any]:
        """The orchestration's custom status (what ``azrun durable status`` shows)."""
        return {
            "shard": self.shard, "subscription": self.subscription, "total": self.total, "cursor": self.cursor,
            "inflight": len(self.inflight), "counts": dict(self.counts), "errors": self.errors,
            "requests": self.requests, "throttled": self.throttled, "tick": self.tick, "stop": self.stop_reason,
            "wave": self.wave, "first_bad": self.first_bad, "budget": dict(self.budget), "budget_at": self.budget_at,
        }  # fmt: skip


@dataclass
class TickReport:
    """What one tick did (kept in the activity's result beside the new state)."""

    dispatched: int = 0
    finished: int = 0
    deleted: int = 0
    seconds: float = 0.0
    worker: str = ""


def shard_instance_id(run_id: str, shard: int) -> str:
    return f"{run_id}.s{shard:04d}"
