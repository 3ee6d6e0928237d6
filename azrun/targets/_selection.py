"""What a selector resolved to: the :class:`Selection` (targets, skipped, not selected)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azrun.errors import NoTargetsMatched
from azrun.models import SkippedTarget, Target
from azrun.targets._selector import Selector

__all__ = ["NotSelected", "Selection"]


@dataclass(frozen=True, slots=True)
class NotSelected:
    """A machine in scope that the filters left out (only collected when explaining)."""

    name: str  # display name; "vmss-api/*" for a Uniform scale set left unexpanded
    kind: str  # a TargetKind value
    resource_id: str
    subscription_id: str
    resource_group: str
    reason: str

    @classmethod
    def of(cls, t: Target, reason: str) -> NotSelected:
        return cls(t.name, t.kind.value, t.resource_id, t.subscription_id, t.resource_group, reason)

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.subscription_id.lower(), self.resource_group.lower(), self.name.lower())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.resource_id, "name": self.name, "kind": self.kind,
            "subscription": self.subscription_id, "resourceGroup": self.resource_group,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """What a selector resolved to; ``targets`` and ``skipped`` are sorted by ``Target.sort_key``."""

    selector: Selector
    targets: tuple[Target, ...]
    skipped: tuple[SkippedTarget, ...]
    subscriptions: tuple[str, ...]
    arm_requests: int
    not_selected: tuple[NotSelected, ...] = ()

    @property
    def matched(self) -> int:
        """Every machine the selector matched: the targets and the skipped ones."""
        return len(self.targets) + len(self.skipped)

    def counts(self) -> dict[str, dict[str, int]]:
        """Matched machines (targets and skipped) by kind and by power state."""
        by_kind: dict[str, int] = {}
        by_power: dict[str, int] = {}
        for t in (*self.targets, *(s.target for s in self.skipped)):
            by_kind[t.kind.value] = by_kind.get(t.kind.value, 0) + 1
            by_power[t.power_state] = by_power.get(t.power_state, 0) + 1
        return {"kind": dict(sorted(by_kind.items())), "power": dict(sorted(by_power.items()))}

    def no_match_message(self) -> str:
        """A one-line explanation of why nothing matched."""
        subs = ", ".join(self.subscriptions) or "(none)"
        return f"no machine matched {self.selector.describe()} in subscription(s) {subs}"

    def require_targets(self) -> tuple[Target, ...]:
        """The targets, or NoTargetsMatched: a run refuses to run on nothing."""
        if self.targets:
            return self.targets
        if self.skipped:
            raise NoTargetsMatched(
                f"every machine that matched {self.selector.describe()} is stopped or deallocated "
                f"({len(self.skipped)})",
                hint="start them, or pass --include-stopped to see them fail explicitly",
            )
        raise NoTargetsMatched(self.no_match_message(), hint="check the selector with `azrun targets --explain`")

