"""Client-side throttling for ARM and Compute, so a fleet fan-out goes as fast as the published
limits allow and (almost) never sees a 429 (azure-facts §3).

Pieces, each usable alone:

* :class:`TokenBucket` (in ``azrun._bucket``): FIFO, cancellation-safe, thread- and multi-loop-safe.
* :func:`classify` (pure): method + URL -> :class:`RequestClass` (op kind, subscription, Compute
  operation group, target VM, location).
* :class:`Throttle`: the per-run registry of buckets, created lazily from :class:`ThrottleLimits`:
  ARM ``(subscription, reads|writes|deletes)``, Compute per subscription ``(subscription, group)``,
  Compute per resource ``(vm, group)``, and *learned* buckets for rate-limit policies the server
  names that we do not model. ``begin`` waits for a token from each and counts the attempt as in
  flight; ``observe`` hands the answer back: it reconciles buckets with the
  ``x-ms-ratelimit-remaining-*`` headers (ending cold waves and holds, learning capacity and
  refill: see ``azrun._bucket``) and pauses the bucket a 429 belongs to until ``Retry-After``.
* :class:`ThrottlePolicy` / :class:`AsyncThrottlePolicy`: azure-core per-retry policies (every
  attempt pays), and :class:`ThrottleAwareRetryPolicy` / :class:`AsyncThrottleAwareRetryPolicy`:
  azure-core's retry policy minus its sleep for 429s the throttle has already scheduled (the next
  attempt waits in the throttle instead), plus a separate budget of throttle retries.

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
* Retries: azure-core's RetryPolicy stays the only retry loop. After a 429 the throttle has
  paused, it sets ``request.context[SCHEDULED_KEY]``; the throttle-aware retry policy then skips
  its own sleep (the retry waits in :class:`ThrottlePolicy` until the pause ends, so it is never
  sent before ``Retry-After`` and nothing sleeps twice). Every 429, attributed or not, is charged
  to ``retry_throttled`` (default 30) instead of ``retry_total``/``retry_status``, so a 429 storm
  ends in success; for a 429 no bucket can be blamed for, azure-core still sleeps ``Retry-After``.
* ``Throttle.metrics()`` costs one lock per bucket, and there is a bucket per VM touched.
* A 429 we cannot attribute (e.g. Network's ``RetryableErrorDueToAnotherOperation``, or a bare
  ``TooManyRequests``) pauses nothing; the retry policy sleeps for it as usual. An attributed
  429 without ``Retry-After`` pauses its bucket for ``1 / refill_per_s`` clipped to [1, 60] s.
* Every bucket the Throttle creates is *adaptive* (``azrun._bucket``): until its first answer
  only a first wave (1 s of refill) goes out, refill credit waits for the server to start
  counting, the server's ``remaining`` is compared with what we have in flight, and a refill
  rate clearly below the configured one is learned from successive headers. A learned bucket
  created from a header starts warm (at that header's count).
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import unquote

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, HTTPPolicy, RetryPolicy

from azrun._bucket import (
    AsyncSleep,
    BucketStats,
    Clock,
    SyncSleep,
    TokenBucket,
    acquire_all,
    acquire_all_sync,
)
from azrun.errors import ConfigError

__all__ = [
    "DELETE_VM", "GET_OPERATION", "HIGH_COST_GET", "LOW_COST_GET", "PUT_VM", "SCHEDULED_KEY", "UPDATE_VM",
    "VMSS_VM_GET", "VMSS_VM_UPDATE", "AsyncThrottleAwareRetryPolicy", "AsyncThrottlePolicy", "BucketStats",
    "InFlight", "Limit", "RequestClass", "Throttle", "ThrottleAwareRetryPolicy", "ThrottleLimits", "ThrottleMetrics",
    "ThrottlePolicy", "TokenBucket", "acquire_all", "acquire_all_sync", "aio_client_kwargs", "classify",
    "client_kwargs", "parse_remaining_resource", "parse_retry_after",
]

OpKind = Literal["read", "write", "delete"]
#: ``request.context`` key set when the throttle has scheduled the next attempt after a 429.
SCHEDULED_KEY = "azrun_throttle_scheduled"

PUT_VM, UPDATE_VM, DELETE_VM = "put-vm", "update-vm", "delete-vm"
LOW_COST_GET, HIGH_COST_GET, GET_OPERATION = "low-cost-get", "high-cost-get", "get-operation"
VMSS_VM_UPDATE, VMSS_VM_GET = "vmss-vm-update", "vmss-vm-get"


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket's size: ``burst`` tokens, refilled at ``per_s`` tokens per second."""

    burst: float
    per_s: float


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    """Published limits (azure-facts §3); ``vm_*``/``vmss_vm_*`` are per resource, ``sub_*`` per subscription."""

    enabled: bool = True
    arm_reads: Limit = Limit(250, 25)
    arm_writes: Limit = Limit(200, 10)
    arm_deletes: Limit = Limit(200, 10)
    vm_put: Limit = Limit(12, 4 / 60)
    vm_update: Limit = Limit(12, 4 / 60)  # includes run command PUT/PATCH/DELETE
    vm_delete: Limit = Limit(12, 4 / 60)
    vm_low_cost_get: Limit = Limit(36, 12 / 60)  # includes run command GET/LIST by VM
    vm_get_operation: Limit = Limit(45, 15 / 60)
    vmss_vm_update: Limit = Limit(12, 4 / 60)
    vmss_vm_get: Limit = Limit(36, 12 / 60)
    sub_put_vm: Limit = Limit(1500, 500 / 60)
    sub_update_vm: Limit = Limit(1500, 500 / 60)
    sub_delete_vm: Limit = Limit(1500, 500 / 60)
    sub_low_cost_get: Limit = Limit(24000, 8000 / 60)
    sub_high_cost_get: Limit = Limit(900, 300 / 60)
    sub_get_operation: Limit = Limit(15000, 5000 / 60)
    sub_vmss_vm_update: Limit = Limit(1500, 500 / 60)
    sub_vmss_vm_get: Limit = Limit(6000, 2000 / 60)
    learned_refill_window_s: float = 180.0
    learned_min_capacity: float = 12.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> ThrottleLimits:
        """Build from a config section: ``enabled``, ``<limit>_burst``, ``<limit>_per_s``, ``<limit>_per_min``."""
        limits, changes = cls(), dict[str, Any]()
        for key, raw in values.items():
            name = key.lower()
            try:
                if name in ("enabled", "throttle"):
                    changes["enabled"] = _parse_bool(raw)
                elif name in ("learned_refill_window_s", "learned_min_capacity"):
                    changes[name] = _positive(raw)
                elif (m := re.fullmatch(r"(\w+?)_(burst|per_s|per_min)", name)) and m[1] in _LIMIT_FIELDS:
                    old = changes.get(m[1], getattr(limits, m[1]))
                    value = _positive(raw)
                    if m[2] == "burst" and value < 1:
                        raise ValueError("a burst below 1 token could never pay for a request")
                    changes[m[1]] = (
                        replace(old, burst=value) if m[2] == "burst"
                        else replace(old, per_s=value if m[2] == "per_s" else value / 60.0)
                    )
                else:
                    raise ValueError("unknown setting")
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"throttle setting {key!r}: {exc}",
                    hint="use e.g. arm_writes_per_s = 10, vm_update_burst = 12, enabled = false",
                ) from exc
        return replace(limits, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ThrottleLimits:
        """Read ``AZRUN_THROTTLE=off`` and ``AZRUN_<LIMIT>_{BURST,PER_S,PER_MIN}`` (e.g. ``AZRUN_ARM_WRITES_PER_S``)."""
        env = os.environ if environ is None else environ
        return cls.from_mapping(
            {k[6:]: v for k, v in env.items() if k.startswith("AZRUN_") and k[6:].lower() in _ENV_KEYS}
        )


_LIMIT_FIELDS = frozenset(f.name for f in fields(ThrottleLimits) if f.type in ("Limit", Limit))
_ENV_KEYS = {f"{f}_{unit}" for f in _LIMIT_FIELDS for unit in ("burst", "per_s", "per_min")} | {
    "throttle", "learned_refill_window_s", "learned_min_capacity"}
_RESOURCE_FIELD = {
    PUT_VM: "vm_put", UPDATE_VM: "vm_update", DELETE_VM: "vm_delete", LOW_COST_GET: "vm_low_cost_get",
    GET_OPERATION: "vm_get_operation", VMSS_VM_UPDATE: "vmss_vm_update", VMSS_VM_GET: "vmss_vm_get",
}
_SUB_FIELD = {g: "sub_" + g.replace("-", "_") for g in (*_RESOURCE_FIELD, HIGH_COST_GET)}


def _parse_bool(raw: object) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no", "disabled"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _positive(raw: object) -> float:
    value = float(str(raw))
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number, not {raw!r}")
    return value


# -- classification -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestClass:
    """What a request costs: op kind, scope and (for Compute) operation group and target.

    All names are lower case (ARM paths are case-insensitive); ``target`` is the resource id of
    the VM or VMSS VM a per-resource Compute bucket is keyed on.
    """

    kind: OpKind
    subscription: str | None = None
    resource_group: str | None = None
    provider: str | None = None
    compute_group: str | None = None
    target: str | None = None
    location: str | None = None


_KIND: dict[str, OpKind] = {"PUT": "write", "PATCH": "write", "POST": "write", "DELETE": "delete"}
_ARM_KINDS = {"read": "reads", "write": "writes", "delete": "deletes"}


def classify(method: str, url: str) -> RequestClass:
    """Classify an ARM request by HTTP method and URL (absolute or path; query ignored)."""
    method, url = method.upper(), url.split("?", 1)[0].split("#", 1)[0]
    if (start := url.find("://")) >= 0:
        slash = url.find("/", start + 3)
        url = url[slash:] if slash >= 0 else ""
    segs = [s for s in (unquote(url) if "%" in url else url).lower().split("/") if s]
    kind = _KIND.get(method, "read")
    sub = rg = provider = None
    if len(segs) >= 2 and segs[0] == "subscriptions":
        sub = segs[1]
        if len(segs) >= 4 and segs[2] == "resourcegroups":
            rg = segs[3]
    prov_at = max((i for i, s in enumerate(segs) if s == "providers"), default=-1)
    if prov_at < 0 or prov_at + 1 >= len(segs):
        return RequestClass(kind, sub, rg)
    provider = segs[prov_at + 1]
    if provider != "microsoft.compute":
        return RequestClass(kind, sub, rg, provider)
    group, target, location = _compute(method, kind, segs[:prov_at + 2], segs[prov_at + 2:])
    return RequestClass(kind, sub, rg, provider, group, target, location)


def _compute(
    method: str, kind: OpKind, scope: list[str], rest: list[str]
) -> tuple[str | None, str | None, str | None]:
    """Map a Microsoft.Compute path (after the namespace) to (operation group, target, location)."""
    rtype = rest[0] if rest else ""
    if rtype == "locations" and len(rest) >= 2:
        if len(rest) >= 4 and rest[2] == "operations":
            return GET_OPERATION, None, rest[1]
        return (HIGH_COST_GET if rest[2:] == ["virtualmachines"] else None), None, rest[1]
    if rtype == "virtualmachines":
        if len(rest) == 1:
            return (HIGH_COST_GET if kind == "read" else None), None, None
        target = "/" + "/".join((*scope, *rest[:2]))
        if kind == "read":
            return LOW_COST_GET, target, None
        if len(rest) == 2:
            return {"PUT": PUT_VM, "DELETE": DELETE_VM}.get(method, UPDATE_VM), target, None
        return (DELETE_VM if rest[2:] == ["deallocate"] else UPDATE_VM), target, None
    if rtype == "virtualmachinescalesets" and len(rest) >= 4 and rest[2] == "virtualmachines":
        target = "/" + "/".join((*scope, *rest[:4]))
        return (VMSS_VM_GET if kind == "read" else VMSS_VM_UPDATE), target, None
    return None, None, None


# -- header parsing -----------------------------------------------------------------------
def parse_remaining_resource(value: str) -> list[tuple[str, float]]:
    """``"Microsoft.Compute/A;3, Microsoft.Compute/B;10"`` -> ``[("Microsoft.Compute/A", 3.0), ...]``.

    Malformed pairs are skipped: a header we cannot read must never break a request.
    """
    pairs = []
    for part in value.split(","):
        name, sep, count = part.strip().rpartition(";")
        try:
            if sep and name:
                pairs.append((name.strip(), float(count)))
        except ValueError:
            continue
    return pairs


def parse_retry_after(headers: Mapping[str, str], wall_now: float | None = None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date), ``retry-after-ms`` or ``x-ms-retry-after-ms``."""
    try:
        if value := headers.get("retry-after"):
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value).timestamp()
                return max(0.0, when - (time.time() if wall_now is None else wall_now))
        for name in ("retry-after-ms", "x-ms-retry-after-ms"):
            if value := headers.get(name):
                return max(0.0, float(value) / 1000.0)
    except (TypeError, ValueError):
        pass
    return None


@dataclass(frozen=True, slots=True)
class _Policy:
    """A parsed ``x-ms-ratelimit-remaining-resource`` policy name."""

    key: str  # lower-cased full name, e.g. "microsoft.compute/vmupdateresource"
    group: str | None  # a modelled Compute operation group, if recognised
    per_resource: bool
    window_s: float | None  # from a "3Min"/"30Min" suffix: a legacy windowed counter


def _parse_policy(name: str) -> _Policy:
    key = name.strip().lower()
    core = re.sub(r"[^a-z0-9]", "", key.rsplit("/", 1)[-1])
    window_s = None
    if m := re.search(r"(\d+)(min|m|s|sec|h|hour)$", core):
        window_s = float(m[1]) * {"s": 1, "sec": 1, "h": 3600, "hour": 3600}.get(m[2], 60)
        core = core[: m.start()]
    per_resource = core.endswith("resource")
    core = core.removesuffix("resource").removesuffix("subscription")
    group: str | None = None
    vm_level = "vm" in core and "scaleset" not in core and "vmss" not in core
    if "getoperation" in core or "operationget" in core:
        group = GET_OPERATION
    elif "highcostget" in core:
        group = HIGH_COST_GET
    elif "vmscalesetvm" in core or "vmssvm" in core:
        group = VMSS_VM_GET if "get" in core else VMSS_VM_UPDATE
    elif "lowcostget" in core:
        group = LOW_COST_GET
    elif vm_level and "put" in core:
        group = PUT_VM
    elif vm_level and "update" in core:
        group = UPDATE_VM
    elif vm_level and ("delete" in core or "deallocate" in core):
        group = DELETE_VM
    return _Policy(key, group, per_resource, window_s)


def _throttle_body(body: str | bytes | None) -> tuple[str, list[str]]:
    """(error code, TooManyRequests detail targets) of a 429 body, with or without the ``error`` wrapper."""
    try:
        doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return "", []
    err = doc.get("error", doc) if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return "", []
    details = err.get("details")
    details = details if isinstance(details, list) else []
    targets = [
        str(d["target"]) for d in details
        if isinstance(d, dict) and str(d.get("code", "")).lower() == "toomanyrequests" and d.get("target")
    ]
    return str(err.get("code", "")).lower(), targets


# -- the registry -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ThrottleMetrics:
    """Per-bucket stats plus 429s no bucket could be blamed for."""

    buckets: tuple[BucketStats, ...]
    unattributed_429: int

    @property
    def wait_s(self) -> float:
        return sum(b.wait_s for b in self.buckets)

    @property
    def throttled_429(self) -> int:
        return self.unattributed_429 + sum(b.throttled_429 for b in self.buckets)


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
        self._learned: dict[tuple[str, str, str], tuple[_Policy, ...]] = {}  # replaced, never mutated
        self._policies: dict[str, _Policy] = {}  # memo of _parse_policy
        self._learned_cap: dict[str, float] = {}
        self._unattributed = 0

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
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(
                    limit.burst, limit.per_s, name=name, clock=self._clock, sleep=self._sleep,
                    async_sleep=self._async_sleep, initial=initial, adaptive=True,
                )
            return bucket

    def _arm(self, rc: RequestClass) -> TokenBucket:
        key = ("arm", rc.subscription or "", _ARM_KINDS[rc.kind])
        return self._buckets.get(key) or self._create(key, getattr(self.limits, "arm_" + key[2]))

    def _sub(self, rc: RequestClass, group: str) -> TokenBucket:
        key = ("sub", rc.subscription or "", group)
        return self._buckets.get(key) or self._create(key, getattr(self.limits, _SUB_FIELD[group]))

    def _res(self, target: str, group: str) -> TokenBucket | None:
        key = ("res", target, group)
        if bucket := self._buckets.get(key):
            return bucket
        field = _RESOURCE_FIELD.get(group)
        return self._create(key, getattr(self.limits, field)) if field else None

    def _learn(self, rc: RequestClass, policy: _Policy, count: float) -> TokenBucket | None:
        """Remember a policy the server named, tie it to this request class, return its bucket."""
        with self._lock:
            cap = max(self._learned_cap.get(policy.key, self.limits.learned_min_capacity), count + 1)
            self._learned_cap[policy.key] = cap
            assoc = (rc.subscription or "", rc.provider or "", rc.compute_group or rc.kind)
            known = self._learned.get(assoc, ())
            if policy not in known:
                self._learned[assoc] = (*known, policy)
        return self._learned_bucket(rc, policy, count)

    def _learned_bucket(self, rc: RequestClass, policy: _Policy, initial: float | None = None) -> TokenBucket | None:
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
            policy = self._policies[name] = _parse_policy(name)
        if policy.group is None or policy.window_s is not None:
            return self._learn(rc, policy, count)
        if policy.per_resource and policy.group in _RESOURCE_FIELD:
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

    async def acquire(self, rc: RequestClass) -> float:
        """Wait for a token from every bucket of ``rc``; returns seconds waited (not tracked:
        prefer :meth:`begin` + :meth:`observe` for requests whose answers you see)."""
        return await acquire_all(self.buckets_for(rc)) if self.enabled else 0.0

    def acquire_sync(self, rc: RequestClass) -> float:
        return acquire_all_sync(self.buckets_for(rc)) if self.enabled else 0.0

    async def begin(self, rc: RequestClass) -> InFlight:
        """Wait for a token from every bucket of ``rc``, then count the attempt as in flight."""
        buckets = tuple(self.buckets_for(rc)) if self.enabled else ()
        waited = await acquire_all(buckets, track=True)
        return InFlight(rc, buckets, self._clock(), waited)

    def begin_sync(self, rc: RequestClass) -> InFlight:
        """Blocking :meth:`begin`."""
        buckets = tuple(self.buckets_for(rc)) if self.enabled else ()
        waited = acquire_all_sync(buckets, track=True)
        return InFlight(rc, buckets, self._clock(), waited)

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
        arm_left = _number(headers.get(f"x-ms-ratelimit-remaining-{scope}-{rc.kind}s"))
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
        code, targets = _throttle_body(body)
        hit = [arm] if code == "subscriptionrequeststhrottled" else []
        hit += [b for t in targets if (b := self._policy_bucket(rc, t, 0.0))]
        hit = hit or [b for b, count in seen if count <= 0]
        return hit or ([arm] if arm_left is not None and arm_left < 1 else [])

    def metrics(self) -> ThrottleMetrics:
        """A consistent-enough snapshot of every bucket (one lock per bucket; cheap)."""
        now = self._clock()
        return ThrottleMetrics(tuple(b.snapshot(now) for b in tuple(self._buckets.values())), self._unattributed)

    snapshot = metrics

    def __repr__(self) -> str:
        return f"Throttle(enabled={self.enabled}, buckets={len(self._buckets)})"


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


# -- azure-core policies ---------------------------------------------------------------------
def _response_body(response: Any) -> str | None:
    try:
        return str(response.text())
    except Exception:  # body not read (streamed) or undecodable: headers must do
        return None


def _observe(throttle: Throttle, sent: InFlight, request: PipelineRequest[Any], response: Any) -> None:
    body = _response_body(response) if response.status_code == 429 else None
    if throttle.observe(sent.rc, response.status_code, response.headers, body, sent=sent):
        request.context[SCHEDULED_KEY] = True


class ThrottlePolicy(HTTPPolicy[Any, Any]):
    """Takes a token from every applicable bucket before each attempt; learns from each response."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not self.throttle.enabled:
            return self.next.send(request)
        request.context.pop(SCHEDULED_KEY, None)
        sent = self.throttle.begin_sync(classify(request.http_request.method, request.http_request.url))
        try:
            response = self.next.send(request)
        except BaseException:
            self.throttle.abandon(sent)
            raise
        _observe(self.throttle, sent, request, response.http_response)
        return response


class AsyncThrottlePolicy(AsyncHTTPPolicy[Any, Any]):
    """Async twin of :class:`ThrottlePolicy`; cancelling a waiting request gives its tokens back."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not self.throttle.enabled:
            return await self.next.send(request)
        request.context.pop(SCHEDULED_KEY, None)
        sent = await self.throttle.begin(classify(request.http_request.method, request.http_request.url))
        try:
            response = await self.next.send(request)
        except BaseException:
            self.throttle.abandon(sent)
            raise
        _observe(self.throttle, sent, request, response.http_response)
        return response


def _scheduled(response: object) -> bool:
    return isinstance(response, PipelineResponse) and bool(response.context.get(SCHEDULED_KEY))


def _is_429(response: object) -> bool:
    return isinstance(response, PipelineResponse) and response.http_response.status_code == 429


def _charge_throttled(settings: dict[str, Any], response: object, error: object) -> bool:
    """Count every 429 against ``retry_throttled``, not ``retry_total``/``retry_status``.

    azure-core's ``increment`` decrements total and status; we add one to each first so a 429
    storm cannot exhaust the budget meant for real errors (attributed or not: a bare
    ``TooManyRequests`` is still throttling). Returns False when out of budget.
    """
    if error is not None or not _is_429(response) or settings["total"] <= 0:
        return True  # retry_total=0 (no_retries) still means no retries at all
    settings["throttled"] -= 1
    settings["total"] += 1
    settings["status"] += 1
    return bool(settings["throttled"] >= 0)


_THROTTLED_RETRIES = 30


class ThrottleAwareRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy, except: every 429 is charged to a separate budget of
    ``retry_throttled`` (default 30, also per call) retries, and after a 429 the throttle has
    paused for there is no sleep here (the next attempt waits in :class:`ThrottlePolicy` until
    ``Retry-After``). All else unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.throttled_retries: int = kwargs.pop("retry_throttled", _THROTTLED_RETRIES)
        super().__init__(**kwargs)

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttled"] = options.pop("retry_throttled", self.throttled_retries)
        return settings

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        return _charge_throttled(settings, response, error) and super().increment(settings, response, error)

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if not _scheduled(response):
            super().sleep(settings, transport, response)


class AsyncThrottleAwareRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """Async twin of :class:`ThrottleAwareRetryPolicy`."""

    def __init__(self, **kwargs: Any) -> None:
        self.throttled_retries: int = kwargs.pop("retry_throttled", _THROTTLED_RETRIES)
        super().__init__(**kwargs)

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttled"] = options.pop("retry_throttled", self.throttled_retries)
        return settings

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        return _charge_throttled(settings, response, error) and super().increment(settings, response, error)

    async def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if not _scheduled(response):
            await super().sleep(settings, transport, response)


def client_kwargs(throttle: Throttle | None, **retry_kwargs: Any) -> dict[str, Any]:
    """Constructor kwargs for a sync management client; ``{}`` when throttling is off."""
    if throttle is None or not throttle.enabled:
        return {}
    return {"per_retry_policies": [ThrottlePolicy(throttle)], "retry_policy": ThrottleAwareRetryPolicy(**retry_kwargs)}


def aio_client_kwargs(throttle: Throttle | None, **retry_kwargs: Any) -> dict[str, Any]:
    """Constructor kwargs for an aio management client; ``{}`` when throttling is off."""
    if throttle is None or not throttle.enabled:
        return {}
    return {
        "per_retry_policies": [AsyncThrottlePolicy(throttle)],
        "retry_policy": AsyncThrottleAwareRetryPolicy(**retry_kwargs),
    }

