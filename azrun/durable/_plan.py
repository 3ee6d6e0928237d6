"""How a durable run is cut into shards and waves (pure arithmetic: no I/O, no clock).

A *shard* is one subscription's targets of one wave. Without waves (no ``--waves``, no
``--canary``) a run is one wave and has one shard per subscription. With waves, the wave of each
target comes from :meth:`azrun.fleet.WavePlan.assign` (the same plan arithmetic as a one-process
run), and each wave has one shard per subscription it touches, numbered in wave order.

The run's concurrency and error budgets are split over a wave's shards in proportion to their
targets (at least 1 in flight each), the window capped by the subscription's write budget. The
root orchestration re-splits the error budget before each wave (what the run has left, and the
wave's own budget: :func:`wave_error_shares`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from azrun.durable._state import ShardState
from azrun.models import Target

__all__ = ["RunLayout", "WaveDoc", "layout", "plan_shards", "wave_error_shares"]


@dataclass
class WaveDoc:
    """One wave of a durable run, as the root orchestration's input carries it."""

    shards: list[int]
    size: int
    budget: int | None = None  # the wave's own error budget (--wave-max-errors, the canary's 0)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "size": self.size, "budget": self.budget, "label": self.label}


@dataclass
class RunLayout:
    """The shards (with their targets, in dispatch order) and the waves of a run."""

    shards: list[ShardState] = field(default_factory=list)
    targets: list[list[Target]] = field(default_factory=list)
    waves: list[WaveDoc] = field(default_factory=list)


def plan_shards(run_id: str, targets: Sequence[Target], limit: int, max_errors: int, cap: int, *,
                first: int = 0, wave: int = 0) -> list[ShardState]:  # fmt: skip
    """One shard per subscription of ``targets`` (numbered from ``first``): the concurrency and
    error budgets split in proportion to each shard's targets (at least 1 in flight each), the
    window capped by the budget."""
    sizes: dict[str, int] = defaultdict(int)
    for t in targets:
        sizes[t.subscription_id.lower()] += 1
    n = max(1, len(targets))
    out = []
    for i, sub in enumerate(sorted(sizes)):
        k = sizes[sub]
        window = min(cap, max(1, (limit * k) // n), k)
        out.append(ShardState(run_id=run_id, shard=first + i, subscription=sub, total=k, container="",
                              window=window, max_errors=(max_errors * k) // n, wave=wave))  # fmt: skip
    return out


def layout(run_id: str, targets: Sequence[Target], waves: Sequence[int] | None, *, limit: int, max_errors: int,
           cap: int, wave_budgets: Sequence[int | None] = (), labels: Sequence[str] = ()) -> RunLayout:  # fmt: skip
    """Shards per wave (``waves``: each target's wave index, as ``WavePlan.assign`` gives them;
    None: one wave). ``limit`` is the run's concurrency, spread over each wave's shards."""
    assigned = list(waves) if waves is not None else [0] * len(targets)
    out = RunLayout()
    for w in range(max(assigned, default=-1) + 1):
        members = [t for t, a in zip(targets, assigned, strict=True) if a == w]
        if not members:
            continue
        shards = plan_shards(run_id, members, limit, max_errors, cap, first=len(out.shards), wave=len(out.waves))
        by_sub: dict[str, list[Target]] = defaultdict(list)
        for t in sorted(members, key=lambda t: t.sort_key):
            by_sub[t.subscription_id.lower()].append(t)
        out.shards += shards
        out.targets += [by_sub[s.subscription] for s in shards]
        budget = wave_budgets[w] if w < len(wave_budgets) else None
        out.waves.append(WaveDoc([s.shard for s in shards], len(members), budget, labels[w] if w < len(labels) else ""))
    return out


def wave_error_shares(sizes: Sequence[int], left: int | None, wave_budget: int | None) -> list[int]:
    """Each shard's error budget in a wave of shards of ``sizes``: the run's errors ``left`` and
    the wave's own budget, each split in proportion (rounded down), the smaller of the two."""
    n = max(1, sum(sizes))
    out = []
    for k in sizes:
        shares = [(b * k) // n for b in (left, wave_budget) if b is not None]
        out.append(max(0, min(shares)) if shares else 1_000_000)
    return out
