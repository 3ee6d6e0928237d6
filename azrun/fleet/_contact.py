"""Whether this controller can reach Azure: unreachable is not failed.

A laptop's Wi-Fi drop or a restarted proxy makes every ARM call fail for minutes; the scripts
keep running on their machines. While contact is lost, running targets stay in flight (reads
back off), dispatch waits, and a target past its deadline is left as it is for a resume. The
run's summary says how long contact was lost (:attr:`Contact.notes`).
"""

from __future__ import annotations

from collections.abc import Callable

from azrun.errors import AzureFailure, FailureKind

__all__ = ["Contact", "unreachable"]


def unreachable(failure: AzureFailure) -> bool:
    """Azure gave no usable answer: not sent, no answer, 5xx, or throttled past every retry."""
    if failure.kind in (FailureKind.NOT_SENT, FailureKind.UNKNOWN_OUTCOME, FailureKind.THROTTLED):
        return True
    return failure.kind is FailureKind.OTHER and failure.status is not None and failure.status >= 500


class Contact:
    """Lost/regained contact with ARM, on the run's monotonic clock."""

    def __init__(self, clock: Callable[[], float], on_back: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_back = on_back
        self.lost_since: float | None = None
        self.episodes: list[tuple[float, float | None, str]] = []  # (from, to, first error)

    def __repr__(self) -> str:
        return f"Contact(down={self.down}, episodes={len(self.episodes)})"

    @property
    def down(self) -> bool:
        return self.lost_since is not None

    def down_for(self) -> float:
        return 0.0 if self.lost_since is None else self._clock() - self.lost_since

    def lost(self, failure: AzureFailure) -> None:
        if self.lost_since is None:
            self.lost_since = self._clock()
            self.episodes.append((self.lost_since, None, failure.describe()))

    def ok(self) -> None:
        if self.lost_since is None:
            return
        start, _, why = self.episodes[-1]
        self.episodes[-1] = (start, self._clock(), why)
        self.lost_since = None
        if self._on_back is not None:
            self._on_back()

    def notes(self) -> tuple[str, ...]:
        out = []
        for start, end, why in self.episodes:
            if end is None:
                out.append(f"the controller lost contact with Azure {self._clock() - start:.0f}s before the end "
                           f"({why}); targets in flight were left as they were: resume the run")
            else:
                out.append(f"the controller lost contact with Azure for {end - start:.0f}s ({why}); "
                           "targets stayed in flight meanwhile")
        return tuple(out)
