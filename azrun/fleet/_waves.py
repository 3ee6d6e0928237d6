"""Rollout waves: which targets go in which wave, and the budget and soak between them (pure).

``--waves 1,10%,50%,100%``: cumulative sizes, a count or a percentage of the targets (rounded
up, like ``--max-concurrency``): wave 1 is the first target, wave 2 brings the total to 10 %,
and so on; a size that adds nobody is dropped, and targets past the last size form a final wave.
``--waves tag:KEY`` (one wave per value of the tag, in sorted order, untagged machines last),
``--waves region`` / ``resource-group`` / ``subscription``: one wave per group.

Between waves the rollout waits for every target of the wave to finish, then soaks
(``--soak``); a wave whose errors exceed ``--wave-max-errors`` (``N`` or ``N%`` of the wave)
stops the rollout: what is in flight finishes, the rest is Skipped with the reason. The canary
(``--canary N``) is the plan ``N,100%`` with a wave error budget of 0.

The plan is stored with the run (:meth:`WavePlan.to_dict`) and each target's wave in the ledger,
so a resumed run continues mid-rollout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from azrun.errors import ConfigError
from azrun.fleet._options import Budget
from azrun.models import Target

__all__ = ["GROUP_KINDS", "WavePlan"]

GROUP_KINDS = ("region", "resource-group", "subscription")
_HINT = "e.g. --waves 1,10%,50%,100%, --waves tag:patch-group, --waves region"
_TAG = re.compile(r"^tag:(?P<key>[^=,\s]+)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WavePlan:
    """How a run rolls out (see the module docstring).

    Args:
        kind: ``"size"`` (cumulative ``sizes``), ``"tag"`` (``key``) or one of :data:`GROUP_KINDS`.
        soak_s: wait after each wave (but the last) finished before the next one starts.
        max_errors: per-wave error budget (``None``: only the run's ``max_errors``).
        canary: the plan stands for ``--canary`` (its stop message says so).
    """

    kind: str = "size"
    sizes: tuple[Budget, ...] = ()
    key: str = ""
    soak_s: float = 0.0
    max_errors: Budget | None = None
    canary: bool = False

    @classmethod
    def parse(cls, raw: str, *, soak_s: float = 0.0, max_errors: str | int | Budget | None = None) -> WavePlan:
        """``"1,10%,50%,100%"``, ``"tag:KEY"``, ``"region"``, ``"resource-group"``, ``"subscription"``.

        Raises:
            ConfigError: not a plan (one line, with examples).
        """
        text = str(raw).strip()
        budget = None if max_errors is None else Budget.parse(max_errors, what="--wave-max-errors")
        if soak_s < 0:
            raise ConfigError(f"--soak must not be negative: {soak_s:g}", hint="e.g. --soak 10m")
        found = _TAG.match(text)
        if found:
            return cls("tag", key=found.group("key"), soak_s=soak_s, max_errors=budget)
        if text.lower() in GROUP_KINDS:
            return cls(text.lower(), soak_s=soak_s, max_errors=budget)
        if not text:
            raise ConfigError("--waves is empty", hint=_HINT)
        sizes = []
        for part in text.split(","):
            try:
                size = Budget.parse(part, what="--waves")
            except ConfigError as exc:
                raise ConfigError(f"--waves {text!r}: {part.strip()!r} is not a count, a percentage, tag:KEY or a "
                                  "group", hint=_HINT) from exc
            if size.value == 0:
                raise ConfigError(f"--waves {text!r}: a wave of 0 targets", hint=_HINT)
            sizes.append(size)
        return cls("size", tuple(sizes), soak_s=soak_s, max_errors=budget)

    @classmethod
    def for_canary(cls, n: int) -> WavePlan:
        """``--canary N``: N targets first, the rest only if all of them succeed."""
        return cls("size", (Budget(float(n)), Budget(100.0, True)), max_errors=Budget(0.0), canary=True)

    def assign(self, targets: Sequence[Target]) -> list[int]:
        """Each target's wave index (in the order given); indexes run 0..n-1 without gaps."""
        if self.kind == "size":
            return self._by_size(len(targets))
        keys = [self._group(t) for t in targets]
        order = sorted({k for k in keys if k is not None}, key=str.lower)
        index = {k: i for i, k in enumerate(order)}
        rest = len(order)
        return [index[k] if k is not None else rest for k in keys]

    def _by_size(self, n: int) -> list[int]:
        waves: list[int] = []
        done = 0
        for size in self.sizes:
            total = min(n, math.ceil(size.value * n / 100) if size.percent else int(size.value))
            if total > done:
                waves += [len(set(waves))] * (total - done)
                done = total
        if done < n:
            waves += [len(set(waves))] * (n - done)
        return waves

    def _group(self, target: Target) -> str | None:
        if self.kind == "tag":
            wanted = self.key.lower()
            return next((v for k, v in target.tags if k.lower() == wanted), None)
        if self.kind == "region":
            return target.location.lower() or None
        if self.kind == "resource-group":
            return target.resource_group.lower() or None
        if self.kind == "subscription":
            return target.subscription_id.lower() or None
        raise ConfigError(f"unknown wave kind {self.kind!r}", hint=_HINT)

    def labels(self, targets: Sequence[Target]) -> list[str]:
        """A name per wave (``"1 target"``, ``"to 10%"``, ``"patch-group=a"``, ``"westeurope"``)."""
        waves = self.assign(targets)
        count = max(waves, default=-1) + 1
        if self.kind != "size":
            groups: dict[int, str] = {}
            for t, w in zip(targets, waves, strict=True):
                g = self._group(t)
                groups.setdefault(w, (f"{self.key}={g}" if self.kind == "tag" else g) if g else "(none)")
            return [groups[i] for i in range(count)]
        return [f"{sum(1 for w in waves if w == i)} targets" for i in range(count)]

    def wave_budget(self, size: int) -> int | None:
        """The error budget of a wave of ``size`` targets (percent rounds down), or None."""
        return None if self.max_errors is None else self.max_errors.errors(size)

    def describe(self) -> str:
        what = {"size": ",".join(str(s) for s in self.sizes), "tag": f"tag:{self.key}"}.get(self.kind, self.kind)
        extra = [f"soak {self.soak_s:g}s"] if self.soak_s else []
        if self.max_errors is not None:
            extra.append(f"wave max errors {self.max_errors}")
        return f"{what}" + (f" ({', '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sizes": [str(s) for s in self.sizes], "key": self.key, "soak_s": self.soak_s,
                "max_errors": None if self.max_errors is None else str(self.max_errors), "canary": self.canary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WavePlan:
        errors = data.get("max_errors")
        return cls(
            kind=str(data.get("kind", "size")), sizes=tuple(Budget.parse(s) for s in data.get("sizes", ())),
            key=str(data.get("key", "")), soak_s=float(data.get("soak_s", 0.0)),
            max_errors=None if errors is None else Budget.parse(errors), canary=bool(data.get("canary", False)),
        )  # fmt: skip
