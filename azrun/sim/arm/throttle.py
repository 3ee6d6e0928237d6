"""Throttling as ARM and Microsoft.Compute do it (azure-facts §3).

Two layers, checked in the order the real request meets them:

1. ARM's regional token buckets, keyed subscription x caller x kind (read/write/delete),
   plus a *global* subscription bucket 15 times larger shared by every caller. Requests
   without a subscription (``GET /subscriptions``, ``/tenants``) use tenant buckets.
2. Compute's per-policy buckets, per resource (VM) and per subscription, refilled per minute.

ARM takes its tokens once it lets a request through, even when Compute then refuses it
(the RP never saw the ARM bucket); a refused request takes no token at its own layer
("If you send a request before the retry value has elapsed, your request isn't processed").
With ``Limits.enabled = false`` nothing is refused but the headers are still sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from azrun.sim.arm.errors import ArmError
from azrun.sim.fleetspec import Limits
from azrun.sim.limits import SimBucket

GLOBAL_FACTOR = 15
_PLURAL = {"read": "reads", "write": "writes", "delete": "deletes"}


@dataclass(frozen=True, slots=True)
class ComputePolicy:
    """One Compute throttling policy: its name and (capacity, refill/s) per resource and subscription."""

    name: str
    resource: tuple[float, float] | None
    subscription: tuple[float, float]


def compute_policies(limits: Limits) -> dict[str, ComputePolicy]:
    """The policies the local Compute RP applies, from the fleet's ``[limits]``."""
    return {
        p.name: p
        for p in (
            ComputePolicy("VMUpdate", limits.vm_update_resource, limits.vm_update_subscription),
            ComputePolicy("VMGet", limits.vm_get_resource, limits.vm_get_subscription),
            ComputePolicy("VMList", None, limits.vm_list_subscription),
            ComputePolicy("VMOperation", limits.vm_operation_resource, limits.vm_operation_subscription),
            ComputePolicy(
                "VMScaleSetVMUpdate", limits.vm_update_resource, limits.vmss_vm_update_subscription
            ),
            ComputePolicy("VMScaleSetVMGet", limits.vm_get_resource, limits.vmss_vm_get_subscription),
        )
    }


def _retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s)) if math.isfinite(wait_s) else 3600


class Throttler:
    """All of the local Azure's ARM and Compute buckets; replaced whole when limits change."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._policies = compute_policies(limits)
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
            wait = self._take_all([b for _, b in pairs])
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

    def compute(self, policy: str, *, subscription: str, resource: str | None) -> dict[str, str]:
        """Take Compute tokens for one request; return ``x-ms-ratelimit-remaining-resource``.

        Raises:
            ArmError: 429 ``OperationNotAllowed`` / ``TooManyRequests`` naming the policy.
        """
        pol = self._policies[policy]
        pairs: list[tuple[str, SimBucket]] = []
        if pol.resource is not None and resource is not None:
            pairs.append((f"{policy}Resource", self._bucket(("res", policy, resource), pol.resource)))
        pairs.append(
            (f"{policy}Subscription", self._bucket(("csub", policy, subscription), pol.subscription))
        )
        refused: SimBucket | None = None
        wait = 0.0
        if self.limits.enabled:
            wait = self._take_all([b for _, b in pairs])
            if wait > 0:
                refused = next(b for _, b in pairs if b.remaining() < 1)
        header = ",".join(f"Microsoft.Compute/{name};{b.remaining()}" for name, b in pairs)
        result = {"x-ms-ratelimit-remaining-resource": header, "x-ms-request-charge": "1"}
        if refused is None:
            return result
        raise self._compute_429(policy, refused, wait, result)

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
    def _take_all(buckets: list[SimBucket]) -> float:
        """Take one token from each bucket, or none at all; return the wait when refused."""
        short = [b for b in buckets if b.remaining() < 1]
        if short:
            # take() on a bucket below one token takes nothing and reports the wait.
            return max(b.take() or 0.0 for b in short) or 1.0
        for b in buckets:
            b.take()
        return 0.0

    def __repr__(self) -> str:
        return f"Throttler(enabled={self.limits.enabled}, buckets={len(self._buckets)})"
