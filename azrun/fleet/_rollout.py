"""Rolling a run out in waves (:mod:`._waves` has the plan): each wave is dispatched and
finished before the next, soaking in between; a wave over its error budget stops the rollout
(what is in flight finishes, the rest is Skipped with the reason). On resume, finished waves are
passed over and a soak already begun waits only what is left."""

from __future__ import annotations

from collections import deque

from azrun.fleet._watch import Watching
from azrun.fleet._work import Work
from azrun.models import TargetState

__all__ = ["Rollout"]


class Rollout(Watching):
    """Waves, soak and per-wave budgets (see the module docstring)."""

    async def _wave_run(self, queue: deque[Work]) -> None:  # dispatch lives in the Runner
        raise NotImplementedError

    async def _rollout(self) -> None:
        """One wave after another: each finishes (and soaks) before the next; a wave over its
        error budget stops the rollout. On resume, finished waves are passed over."""
        assert self._plan is not None
        count = self.wave_count
        for i in range(count):
            members = [w for w in self.works if w.wave == i]
            if all(w.state.terminal for w in members):
                continue
            untouched = all(w.state is TargetState.PENDING for w in members)
            if i > 0 and untouched and self._plan.soak_s > 0:
                self._wave = i - 1
                await self._soak([w for w in self.works if w.wave == i - 1])
            if self.stop_reason is not None:
                return
            self._wave = i
            await self._wave_run(deque(w for w in members if w.state is TargetState.PENDING))
            if self.stop_reason is not None:
                return
            reason = self._wave_over_budget(i, finished=True)
            if reason is not None:
                self.stop_dispatch(reason)
                return

    async def _soak(self, previous: list[Work]) -> None:
        """Wait ``soak_s`` after the previous wave's last end (a resume waits only what is left)."""
        assert self._plan is not None
        ended = [w.ended_at for w in previous if w.ended_at is not None]
        since = (self.clock.now() - max(ended)).total_seconds() if ended else 0.0
        left = self._plan.soak_s - max(0.0, since)
        self._soak_until = self._clock() + left
        try:
            while self.stop_reason is None and self._soak_until - self._clock() > 0:
                await self.clock.sleep(min(1.0, self._soak_until - self._clock()))
        finally:
            self._soak_until = None

    def _wave_over_budget(self, i: int, *, finished: bool = False) -> str | None:
        if self._plan is None:
            return None
        members = [w for w in self.works if w.wave == i]
        if self._plan.canary:
            bad = [w for w in members if w.state.terminal and w.state is not TargetState.SUCCEEDED]
            if bad and (finished or any(w.state.counts_as_error for w in bad)) and i == 0:
                return f"canary failed ({bad[0].target.name}: {bad[0].state.value})"
            return None
        allowed = self._plan.wave_budget(self._wave_sizes.get(i, 0))
        errors = self._wave_errors.get(i, 0)
        if allowed is not None and errors > allowed:
            return f"wave {i + 1}/{self.wave_count} exceeded its error budget ({errors} errors > max {allowed})"
        return None

    @property
    def wave_count(self) -> int:
        return 0 if self._plan is None else max((w.wave for w in self.works), default=-1) + 1
