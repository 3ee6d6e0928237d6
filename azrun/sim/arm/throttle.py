"""Throttling as ARM and Microsoft.Compute do it (azure-facts §3).

Two layers, checked in the order the real request meets them:

1. ARM's regional token buckets, keyed subscription x caller x kind (read/write/delete),
   plus a *global* subscription bucket 15 times larger shared by every caller. Requests
   without a subscription (``GET /subscriptions``, ``/tenants``) use tenant buckets.
2. Compute's per-policy buckets, per resource and per subscription, named and ordered per
   operation as recorded Azure names them (``policies.py``; current or legacy header format).

ARM takes its tokens once it lets a request through, even when Compute then refuses it
(the RP never saw the ARM bucket); a refused request takes no token at its own layer
("If you send a request before the retry value has elapsed, your request isn't processed").
With ``Limits.enabled = false`` nothing is refused but the headers are still sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from azrun.sim.arm.errors import ArmError
from azrun.sim.arm.policies import Meter, operation_policies
from azrun.sim.fleetspec import Limits
from azrun.sim.limits import SimBucket

GLOBAL_FACTOR = 15
_PLURAL = {"read": "reads", "write": "writes", "delete": "deletes"}


def _retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else 3600


class Throttler:
    """All of the local Azure's ARM and Compute buckets; replaced whole when limits change."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._policies = operation_policies(limits)
        self._buckets: dict[tuple[str, ...], SimBucket] = {}
        self._refused: dict[tuple[str, ...], int] = {}

    def _bucket(self, key: tuple[str, ...], spec: tuple[float, float]) -> SimBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = SimBucket(spec[0], spec[1], clock=self._clock)
            self._buckets[key] = bucket
        return bucket

    def _arm_spec(self, kind: str) -> tuple[float, float]:
        return {"read": self.limits.arm_reads, "write": self.limits.arm_writes}.get(
            kind, self.limits.arm_deletes
        )

    def arm(self, *, subscription: str | None, tenant: str, caller: str, kind: str) -> dict[str, str]:
        """Take ARM tokens for one request; return the ``x-ms-ratelimit-remaining-*`` headers.

        Raises:
            ArmError: 429 ``SubscriptionRequestsThrottled`` with ``Retry-After``.
        """
        spec = self._arm_spec(kind)
        plural = _PLURAL[kind]
        if subscription is None:
            own = self._bucket(("tenant", tenant, caller, kind), spec)
            pairs = [(f"x-ms-ratelimit-remaining-tenant-{plural}", own)]
        else:
            own = self._bucket(("sub", subscription, caller, kind), spec)
            shared = self._bucket(
                ("global", subscription, kind), (spec[0] * GLOBAL_FACTOR, spec[1] * GLOBAL_FACTOR)
            )
            pairs = [
                (f"x-ms-ratelimit-remaining-subscription-{plural}", own),
                (f"x-ms-ratelimit-remaining-subscription-global-{plural}", shared),
            ]
        if self.limits.enabled:
            wait = self._take_all([(b, 1.0) for _, b in pairs])
            if wait > 0:
                headers = {name: str(b.remaining()) for name, b in pairs}
                headers["Retry-After"] = str(_retry_after(wait))
                scope = subscription or tenant
                raise ArmError(
                    429,
                    "SubscriptionRequestsThrottled" if subscription else "TenantRequestsThrottled",
                    f"Number of '{kind}' requests for subscription '{scope}' actor '{caller}' exceeded. "
                    f"Please try again after '{_retry_after(wait)}' seconds after the additional tokens "
                    "are available. Refer to https://aka.ms/arm-throttling for additional information.",
                    headers=headers,
                    log={"throttle": f"arm-{kind}"},
                )
        return {name: str(b.remaining()) for name, b in pairs}

    def compute(
        self, operation: str, *, subscription: str, resource: str | None, charge: int = 1
    ) -> dict[str, str]:
        """Take Compute tokens for one request; return ``x-ms-ratelimit-remaining-resource`` (and
        ``x-ms-request-charge`` where Azure sends it). ``charge``: tokens the charged meters take.

        Raises:
            ArmError: 429 ``OperationNotAllowed`` / ``TooManyRequests`` naming the policy.
        """
        pol = self._policies[operation]
        pairs: list[tuple[Meter, SimBucket, float]] = []
        for meter in pol.meters:
            if meter.spec is None or (meter.charged and charge <= 0):
                continue
            if meter.scope == "res":
                if resource is None:
                    continue
                key: tuple[str, ...] = ("res", meter.name, resource)
            else:
                key = ("csub", meter.name, subscription)
            cost = float(max(charge, 0)) if meter.charged else 1.0
            pairs.append((meter, self._bucket(key, meter.spec), cost))
        refused: tuple[Meter, SimBucket] | None = None
        wait = 0.0
        if self.limits.enabled:
            wait = self._take_all([(b, c) for _, b, c in pairs])
            if wait > 0:
                refused = next((m, b) for m, b, c in pairs if b.remaining() < c)
        left = {m.name: b.remaining() for m, b, _ in pairs}
        shown = [
            f"Microsoft.Compute/{m.name};{0 if m.spec is None else left[m.name]}"
            for m in pol.meters
            if m.shown and (m.spec is None or m.name in left)
        ]
        result = {"x-ms-ratelimit-remaining-resource": ",".join(shown)} if shown else {}
        if pol.charge and charge > 0:  # an empty listing charges nothing and says so (recorded)
            result["x-ms-request-charge"] = str(charge)
        if refused is None:
            return result
        raise self._compute_429(refused[0].name, refused[1], wait, result)

    def _compute_429(self, policy: str, bucket: SimBucket, wait: float, headers: dict[str, str]) -> ArmError:
        key = (policy, str(id(bucket)))
        self._refused[key] = self._refused.get(key, 0) + 1
        now = datetime.now(timezone.utc)
        detail = (
            f'{{"operationGroup":"{policy}","startTime":"{(now - timedelta(minutes=1)).isoformat()}",'
            f'"endTime":"{now.isoformat()}","allowedRequestCount":{int(bucket.capacity)},'
            f'"measuredRequestCount":{int(bucket.capacity) + self._refused[key]}}}'
        )
        headers = {**headers, "Retry-After": str(_retry_after(wait))}
        headers.pop("x-ms-request-charge", None)
        return ArmError(
            429,
            "OperationNotAllowed",
            "The server rejected the request because too many requests have been received for this subscription.",
            headers=headers,
            extra={
                "details": [{"code": "TooManyRequests", "target": policy, "message": detail}],
                "innererror": {"internalErrorCode": "TooManyRequestsReceived"},
            },
            log={"throttle": f"compute-{policy}"},
        )

    @staticmethod
    def _take_all(buckets: list[tuple[SimBucket, float]]) -> float:
        """Take ``cost`` tokens from each bucket, or none at all; return the wait when refused."""
        short = [(b, c) for b, c in buckets if b.remaining() < c]
        if short:
            # take() on a bucket short of tokens takes nothing and reports the wait.
            return max(b.take(min(c, b.capacity)) or 0.0 for b, c in short) or 1.0
        for b, c in buckets:
            b.take(c)
        return 0.0

    def __repr__(self) -> str:
        return f"Throttler(enabled={self.limits.enabled}, buckets={len(self._buckets)})"
