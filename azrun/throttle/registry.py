"""Throttle: the per-run registry of buckets, and what a response tells them.

Buckets are created lazily from :class:`~azrun.throttle.limits.ThrottleLimits`: ARM
``(subscription, reads|writes|deletes)``, Compute per subscription ``(subscription, group)``,
Compute per resource ``(vm, group)``, and *learned* buckets for rate-limit policies the server
names that we do not model. ``begin`` waits for a token from each and counts the attempt as in
flight; ``observe`` hands the answer back: it reconciles buckets with the
``x-ms-ratelimit-remaining-*`` headers (ending cold waves and holds, learning capacity and
refill: see :mod:`azrun.throttle.adaptive`) and pauses the bucket a 429 belongs to until
``Retry-After``.

Choices where the docs are silent:

* Compute buckets are keyed per subscription, not per region: most Compute URLs (run commands)
  do not name the region, and merging regions only errs on the slow side.
* A learned policy (unknown name, or a legacy windowed one like ``PutVM3Min``) gets capacity
  ``max(count + 1, learned_min_capacity)`` (it grows if the server later shows more) and refills
  its capacity once per window (``3Min`` -> 180 s, ``30Min`` -> 1800 s, otherwise
  ``learned_refill_window_s`` = 180 s, the published Compute ratio of burst = 3 x refill/min).
  Resource-scoped learned policies are kept per target. From then on every request of the same
  (subscription, provider, group or kind) also takes from them.
* ``x-ms-ratelimit-remaining-subscription-global-*`` is ignored: that bucket is 15x ours and
  shared by every principal; if others drain it, its 429 (``SubscriptionRequestsThrottled``)
  pauses our ARM bucket anyway. Requests without a subscription use the tenant headers.
* Per-VM buckets that are full and idle are dropped (:meth:`Throttle.prune`, run whenever their
  number doubles, from 1,024): a run keeps the buckets of the VMs of about the last refill
  interval, not one set per target. ``Throttle.metrics()`` costs one lock per bucket kept.
* A 429 we cannot attribute (e.g. Network's ``RetryableErrorDueToAnotherOperation``, or a bare
  ``TooManyRequests``) pauses nothing; the retry policy sleeps for it as usual. An attributed
  429 without ``Retry-After`` pauses its bucket for ``1 / refill_per_s`` clipped to [1, 60] s.
* Every bucket the Throttle creates is an :class:`~azrun.throttle.adaptive.AdaptiveBucket`: until
  its first answer only a first wave (1 s of refill) goes out, refill credit waits for the server
  to start counting, the server's ``remaining`` is compared with what we have in flight, and a
  refill rate clearly below the configured one is learned from successive headers. A learned
  bucket created from a header starts warm (at that header's count).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from azrun.throttle.adaptive import AdaptiveBucket
from azrun.throttle.bucket import BucketStats, TokenBucket
from azrun.throttle.limits import (
    ARM_KINDS,
    RESOURCE_FIELD,
    SUB_FIELD,
    Limit,
    Policy,
    RequestClass,
    ThrottleLimits,
    parse_number,
    parse_policy,
    parse_remaining_resource,
    parse_retry_after,
    parse_throttle_body,
)
from azrun.throttle.waiting import AsyncSleep, Clock, SyncSleep, aacquire_all, acquire_all

__all__ = ["InFlight", "Throttle", "ThrottleMetrics"]

_LOGGER = logging.getLogger(__name__)
#: Per-VM buckets are pruned when their number reaches this, then whenever it doubles.
_PRUNE_MIN = 1024


@dataclass(frozen=True, slots=True)
class ThrottleMetrics:
    """Per-bucket stats plus 429s no bucket could be blamed for, and the totals of the per-VM
    buckets dropped since (see :meth:`Throttle.prune`)."""

    buckets: tuple[BucketStats, ...]
    unattributed_429: int
    retired_buckets: int = 0
    retired_wait_s: float = 0.0
    retired_429: int = 0

    @property
    def wait_s(self) -> float:
        return self.retired_wait_s + sum(b.wait_s for b in self.buckets)

    @property
    def throttled_429(self) -> int:
        return self.unattributed_429 + self.retired_429 + sum(b.throttled_429 for b in self.buckets)


@dataclass(frozen=True, slots=True)
class InFlight:
    """One attempt :meth:`Throttle.begin` let through; hand it to :meth:`Throttle.observe` with
    its answer, or to :meth:`Throttle.abandon` if none came (it counts as in flight until then)."""

    rc: RequestClass
    buckets: tuple[TokenBucket, ...]
    sent_at: float
    waited_s: float


_Key = tuple[str, str, str]


class Throttle:
    """All buckets of one process or fleet run; pass it explicitly to whoever builds clients.

    Args:
        limits: defaults from the published limits; ``limits.enabled=False`` turns throttling off.
        clock, sleep, async_sleep: shared by every bucket (inject fakes in tests).
    """

    def __init__(
        self,
        limits: ThrottleLimits | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: SyncSleep | None = None,
        async_sleep: AsyncSleep | None = None,
    ) -> None:
        self.limits = limits or ThrottleLimits()
        self._clock, self._sleep, self._async_sleep = clock, sleep, async_sleep
        self._lock = threading.Lock()
        self._buckets: dict[_Key, TokenBucket] = {}
        self._learned: dict[tuple[str, str, str], tuple[Policy, ...]] = {}  # replaced, never mutated
        self._policies: dict[str, Policy] = {}  # memo of parse_policy
        self._learned_cap: dict[str, float] = {}
        self._unattributed = 0
        self._per_resource = 0  # buckets keyed on one VM: the ones there are thousands of
        self._prune_at = _PRUNE_MIN
        self._retired = (0, 0.0, 0)  # buckets, wait_s, 429s of the per-VM buckets dropped

    @property
    def enabled(self) -> bool:
        return self.limits.enabled

    def _create(self, key: _Key, limit: Limit, initial: float | None = None) -> TokenBucket:
        """Make the bucket for ``key`` unless another thread just did (slow path only).

        Adaptive, and cold unless ``initial`` (a count the server just sent) is given.
        """
        kind, scope, what = key
        if kind == "res":
            prefix, _, path = scope.partition("/providers/microsoft.compute/")
            name = f"compute/{prefix.rsplit('/', 1)[-1]}/{path}/{what}"
        else:
            name = f"{'compute' if kind == 'sub' else kind}/{scope or 'tenant'}/{what}"
        per_resource = kind == "res" or scope.startswith("/")
        if per_resource and self._per_resource >= self._prune_at:
            self.prune()
            self._prune_at = max(_PRUNE_MIN, 2 * self._per_resource)  # amortised O(1) per bucket made
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                self._per_resource += per_resource
                bucket = self._buckets[key] = AdaptiveBucket(
                    limit.burst, limit.per_s, name=name, clock=self._clock, sleep=self._sleep,
                    async_sleep=self._async_sleep, initial=initial,
                )
            return bucket

    def _arm(self, rc: RequestClass) -> TokenBucket:
        key = ("arm", rc.subscription or "", ARM_KINDS[rc.kind])
        return self._buckets.get(key) or self._create(key, getattr(self.limits, "arm_" + key[2]))

    def _sub(self, rc: RequestClass, group: str) -> TokenBucket:
        key = ("sub", rc.subscription or "", group)
        return self._buckets.get(key) or self._create(key, getattr(self.limits, SUB_FIELD[group]))

    def _res(self, target: str, group: str) -> TokenBucket | None:
        key = ("res", target, group)
        if bucket := self._buckets.get(key):
            return bucket
        field = RESOURCE_FIELD.get(group)
        return self._create(key, getattr(self.limits, field)) if field else None

    def _learn(self, rc: RequestClass, policy: Policy, count: float) -> TokenBucket | None:
        """Remember a policy the server named, tie it to this request class, return its bucket."""
        with self._lock:
            cap = max(self._learned_cap.get(policy.key, self.limits.learned_min_capacity), count + 1)
            self._learned_cap[policy.key] = cap
            assoc = (rc.subscription or "", rc.provider or "", rc.compute_group or rc.kind)
            known = self._learned.get(assoc, ())
            if policy not in known:
                self._learned[assoc] = (*known, policy)
        return self._learned_bucket(rc, policy, count)

    def _learned_bucket(self, rc: RequestClass, policy: Policy, initial: float | None = None) -> TokenBucket | None:
        scope = rc.target if policy.per_resource else rc.subscription or ""
        if scope is None:
            return None
        cap = self._learned_cap[policy.key]
        refill = cap / (policy.window_s or self.limits.learned_refill_window_s)
        key = ("learned", scope, policy.key)
        bucket = self._buckets.get(key) or self._create(key, Limit(cap, refill), initial)
        if cap > bucket.capacity:
            bucket.resize(cap, refill)
        return bucket

    def _policy_bucket(self, rc: RequestClass, name: str, count: float) -> TokenBucket | None:
        policy = self._policies.get(name)
        if policy is None:
            if len(self._policies) > 1024:  # a server inventing names must not grow us forever
                self._policies.clear()
            policy = self._policies[name] = parse_policy(name)
            if not policy.budget or policy.group is None:
                _LOGGER.debug(
                    "Compute rate-limit policy %s (%g left): %s", name, count,
                    "not a budget, ignored" if not policy.budget else "not modelled, learned as a bucket of its own",
                )
        if not policy.budget:
            return None
        if policy.group is None or policy.window_s is not None:
            return self._learn(rc, policy, count)
        if policy.per_resource and policy.group in RESOURCE_FIELD:
            return self._res(rc.target, policy.group) if rc.target else None
        return self._sub(rc, policy.group)

    def buckets_for(self, rc: RequestClass) -> list[TokenBucket]:
        """Every bucket a request of this class takes a token from."""
        buckets = [self._arm(rc)]
        group = rc.compute_group
        if group is not None:
            buckets.append(self._sub(rc, group))
            if rc.target and (res := self._res(rc.target, group)):
                buckets.append(res)
        for policy in self._learned.get((rc.subscription or "", rc.provider or "", group or rc.kind), ()):
            if bucket := self._learned_bucket(rc, policy):
                buckets.append(bucket)
        return buckets

    def acquire(self, rc: RequestClass) -> float:
        """Wait (blocking) for a token from every bucket of ``rc``; returns seconds waited (not
        tracked: prefer :meth:`begin` + :meth:`observe` for requests whose answers you see)."""
        return acquire_all(self.buckets_for(rc)) if self.enabled else 0.0

    async def aacquire(self, rc: RequestClass) -> float:
        """Async :meth:`acquire`."""
        return await aacquire_all(self.buckets_for(rc)) if self.enabled else 0.0

    def begin(self, rc: RequestClass) -> InFlight:
        """Wait (blocking) for a token from every bucket of ``rc``, then count the attempt as in flight."""
        buckets = tuple(self.buckets_for(rc)) if self.enabled else ()
        waited = acquire_all(buckets, track=True)
        if any(b.retired for b in buckets):
            buckets, fresh = self._replace_retired(rc, buckets)
            waited += acquire_all(fresh, track=True)
        return InFlight(rc, buckets, self._clock(), waited)

    async def abegin(self, rc: RequestClass) -> InFlight:
        """Async :meth:`begin`; cancelling the wait gives the tokens back."""
        buckets = tuple(self.buckets_for(rc)) if self.enabled else ()
        waited = await aacquire_all(buckets, track=True)
        if any(b.retired for b in buckets):
            buckets, fresh = self._replace_retired(rc, buckets)
            waited += await aacquire_all(fresh, track=True)
        return InFlight(rc, buckets, self._clock(), waited)

    def subscription_levels(self, subscription: str) -> dict[str, float]:
        """Tokens left in each of a subscription's own buckets (ARM per kind, Compute per
        operation group), by name: what a worker hands down with a shard (``azrun.durable``)."""
        sub = subscription.lower()
        with self._lock:
            mine = [(k, b) for k, b in self._buckets.items() if k[0] in ("arm", "sub") and k[1] == sub and not b.retired]
        return {f"{kind}/{what}": round(b.level(), 3) for (kind, _, what), b in mine}

    def lower_subscription(self, subscription: str, levels: Mapping[str, float], elapsed_s: float) -> None:
        """Lower this process's buckets of ``subscription`` to what another process's were left at
        (:meth:`subscription_levels`) ``elapsed_s`` ago, plus their refill since (never raised)."""
        sub = subscription.lower()
        for name, level in levels.items():
            kind, _, what = name.partition("/")
            field = "arm_" + what if kind == "arm" else SUB_FIELD.get(what)
            limit = getattr(self.limits, field, None) if field else None
            if kind not in ("arm", "sub") or limit is None:
                continue
            key = (kind, sub, what)
            bucket = self._buckets.get(key)
            if bucket is None or bucket.retired:
                with self._lock:
                    self._buckets.pop(key, None)
                bucket = self._create(key, limit)
            bucket.reconcile(float(level) + max(0.0, elapsed_s) * limit.per_s)

    def _replace_retired(
        self, rc: RequestClass, buckets: tuple[TokenBucket, ...],
    ) -> tuple[tuple[TokenBucket, ...], tuple[TokenBucket, ...]]:
        """Another thread pruned a bucket between our lookup and our reservation: the token must
        come from its replacement. Returns (the buckets to report on, the ones still to pay)."""
        kept = tuple(b for b in buckets if not b.retired)
        fresh = tuple(b for b in self.buckets_for(rc) if b not in kept)
        return kept + fresh, fresh

    def abandon(self, sent: InFlight) -> None:
        """An attempt ended without an answer (connection error, cancellation): it is no longer in
        flight, and since the server may have seen it, refill credit held for its answer resumes."""
        now = self._clock()
        for bucket in sent.buckets:
            bucket.answered(1.0, accepted=False, sent_at=sent.sent_at, now=now)

    def observe(
        self, rc: RequestClass, status: int, headers: Mapping[str, str], body: str | bytes | None = None,
        *, sent: InFlight | None = None,
    ) -> bool:
        """Reconcile buckets with a response; on an attributable 429 pause its bucket(s).

        ``headers`` must be case-insensitive (azure-core's are). ``sent``: what :meth:`begin`
        returned for this attempt (without it every bucket of ``rc`` counts as taken).
        Returns True when the 429 was attributed and paused: the next attempt will wait in
        the throttle, so the retry policy must not sleep on top.
        """
        if not self.enabled:
            return False
        now = self._clock()
        arm = self._arm(rc)
        scope = "subscription" if rc.subscription else "tenant"
        left: dict[TokenBucket, float] = {}
        arm_left = parse_number(headers.get(f"x-ms-ratelimit-remaining-{scope}-{rc.kind}s"))
        if arm_left is not None:
            left[arm] = arm_left
        seen: list[tuple[TokenBucket, float]] = []
        if raw := headers.get("x-ms-ratelimit-remaining-resource"):
            for name, count in parse_remaining_resource(raw):
                if bucket := self._policy_bucket(rc, name, count):
                    left[bucket] = min(count, left.get(bucket, count))
                    seen.append((bucket, count))
        hit = self._blame(rc, body, arm, arm_left, seen) if status == 429 else []
        counted = status != 429 or bool(hit)  # an unattributed 429 may never have reached a bucket
        sent_at, cost = (sent.sent_at, 1.0) if sent is not None else (None, 0.0)
        taken = sent.buckets if sent is not None else self.buckets_for(rc)
        for bucket in taken:
            bucket.answered(cost, remaining=left.pop(bucket, None), accepted=counted and bucket not in hit,
                            sent_at=sent_at, now=now)
        for bucket, count in left.items():  # named by the server, not taken by this request (just learned)
            bucket.answered(0.0, remaining=count, accepted=counted and bucket not in hit, sent_at=sent_at, now=now)
        if status != 429:
            return False
        if not hit:
            with self._lock:
                self._unattributed += 1
            return False
        delay = parse_retry_after(headers)
        for bucket in dict.fromkeys(hit):
            pause = delay if delay is not None else min(60.0, max(1.0, 1.0 / bucket.refill_per_s))
            bucket.throttled(pause, now, sent_at=sent.sent_at if sent else None)
        return True

    def _blame(
        self, rc: RequestClass, body: str | bytes | None, arm: TokenBucket, arm_left: float | None,
        seen: list[tuple[TokenBucket, float]],
    ) -> list[TokenBucket]:
        """The buckets a 429 belongs to: named by its body, else at 0 in its headers (may be none)."""
        code, targets = parse_throttle_body(body)
        hit = [arm] if code == "subscriptionrequeststhrottled" else []
        hit += [b for t in targets if (b := self._policy_bucket(rc, t, 0.0))]
        hit = hit or [b for b, count in seen if count <= 0]
        return hit or ([arm] if arm_left is not None and arm_left < 1 else [])

    def prune(self) -> int:
        """Drop the per-VM buckets that are full and idle; return how many went.

        A full, idle bucket knows nothing a new one would not relearn: the next request for that
        VM gets a fresh (cold) bucket, as a VM seen for the first time does. Their waits and
        429s stay in :meth:`metrics`. Called by the registry itself whenever the number of per-VM
        buckets doubles; a fleet run therefore keeps about the VMs of the last refill interval,
        not one bucket set per target (issue 17: ~3.5 KB per bucket).
        """
        now = self._clock()
        with self._lock:
            candidates = [(k, b) for k, b in self._buckets.items() if k[0] == "res" or k[1].startswith("/")]
        dropped, wait_s, hits = 0, 0.0, 0
        for key, bucket in candidates:
            if (stats := bucket.retire_if_idle(now)) is None:
                continue
            with self._lock:
                if self._buckets.get(key) is bucket:
                    del self._buckets[key]
                    self._per_resource -= 1
            dropped, wait_s, hits = dropped + 1, wait_s + stats.wait_s, hits + stats.throttled_429
        with self._lock:
            n, w, h = self._retired
            self._retired = (n + dropped, w + wait_s, h + hits)
        return dropped

    def metrics(self) -> ThrottleMetrics:
        """A consistent-enough snapshot of every bucket (one lock per bucket; cheap)."""
        now = self._clock()
        buckets = tuple(b.snapshot(now) for b in tuple(self._buckets.values()))
        return ThrottleMetrics(buckets, self._unattributed, *self._retired)

    snapshot = metrics

    def __repr__(self) -> str:
        return f"Throttle(enabled={self.enabled}, buckets={len(self._buckets)})"
