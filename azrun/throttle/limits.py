"""Published limits, request classification and the parsing of throttling answers (all pure).

* :class:`ThrottleLimits`: bucket sizes from the published limits (azure-facts §3), overridable
  from a config section or ``AZRUN_*`` variables.
* :func:`classify`: method + URL -> :class:`RequestClass` (op kind, subscription, Compute
  operation group, target VM, location).
* :func:`parse_remaining_resource`, :func:`parse_policy`: the Compute
  ``x-ms-ratelimit-remaining-resource`` header and its policy names; :func:`parse_retry_after`;
  :func:`parse_throttle_body`: what a 429 body blames.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import unquote

from azrun.errors import ConfigError

__all__ = [
    "ARM_KINDS", "DELETE_VM", "GET_OPERATION", "HIGH_COST_GET", "LOW_COST_GET", "PUT_VM", "RESOURCE_FIELD",
    "SUB_FIELD", "UPDATE_VM", "VMSS_VM_DELETE", "VMSS_VM_GET", "VMSS_VM_UPDATE", "Limit", "OpKind", "Policy", "RequestClass",
    "ThrottleLimits", "classify", "parse_number", "parse_policy", "parse_remaining_resource", "parse_retry_after",
    "parse_throttle_body",
]

OpKind = Literal["read", "write", "delete"]

PUT_VM, UPDATE_VM, DELETE_VM = "put-vm", "update-vm", "delete-vm"
LOW_COST_GET, HIGH_COST_GET, GET_OPERATION = "low-cost-get", "high-cost-get", "get-operation"
VMSS_VM_UPDATE, VMSS_VM_DELETE, VMSS_VM_GET = "vmss-vm-update", "vmss-vm-delete", "vmss-vm-get"


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
    vmss_vm_delete: Limit = Limit(12, 4 / 60)
    vmss_vm_get: Limit = Limit(36, 12 / 60)
    sub_put_vm: Limit = Limit(1500, 500 / 60)
    sub_update_vm: Limit = Limit(1500, 500 / 60)
    sub_delete_vm: Limit = Limit(1500, 500 / 60)
    sub_low_cost_get: Limit = Limit(24000, 8000 / 60)
    sub_high_cost_get: Limit = Limit(900, 300 / 60)
    sub_get_operation: Limit = Limit(15000, 5000 / 60)
    sub_vmss_vm_update: Limit = Limit(1500, 500 / 60)
    sub_vmss_vm_delete: Limit = Limit(1500, 500 / 60)
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
RESOURCE_FIELD = {
    PUT_VM: "vm_put", UPDATE_VM: "vm_update", DELETE_VM: "vm_delete", LOW_COST_GET: "vm_low_cost_get",
    GET_OPERATION: "vm_get_operation", VMSS_VM_UPDATE: "vmss_vm_update", VMSS_VM_DELETE: "vmss_vm_delete",
    VMSS_VM_GET: "vmss_vm_get",
}
SUB_FIELD = {g: "sub_" + g.replace("-", "_") for g in (*RESOURCE_FIELD, HIGH_COST_GET)}


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
ARM_KINDS = {"read": "reads", "write": "writes", "delete": "deletes"}


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
        if kind == "read":
            return VMSS_VM_GET, target, None
        if method == "DELETE" or rest[4:] == ["deallocate"]:  # recorded: DeleteVMScaleSetVM* policies
            return VMSS_VM_DELETE, target, None
        return VMSS_VM_UPDATE, target, None
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
class Policy:
    """A parsed ``x-ms-ratelimit-remaining-resource`` policy name (see :func:`parse_policy`)."""

    key: str  # lower-cased full name, e.g. "microsoft.compute/updatevmresource"
    group: str | None  # a modelled Compute operation group, if recognised
    per_resource: bool
    window_s: float | None  # from a "3Min"/"30Min" suffix: a legacy windowed counter
    budget: bool = True  # False: a counter that is not a remaining budget (never paces anything)


#: Policy base names (scope and window suffixes removed) of modelled groups (azure-recorded §4).
_GROUPS = {
    "updatevm": UPDATE_VM, "putvm": PUT_VM, "deletevm": DELETE_VM,
    "lowcostget": LOW_COST_GET, "highcostget": HIGH_COST_GET, "getoperation": GET_OPERATION,
    "vmscalesetvmactions": VMSS_VM_UPDATE, "deletevmscalesetvm": VMSS_VM_DELETE, "getvmscalesetvm": VMSS_VM_GET,
    # names the local Azure used before it spoke real Azure's (cheap to keep)
    "vmupdate": UPDATE_VM, "vmscalesetvmupdate": VMSS_VM_UPDATE, "vmscalesetvmget": VMSS_VM_GET,
}
#: Counters Compute reports beside the budgets that are not remaining budgets: real Azure answers
#: ``VmssQueuedVMOperations;0`` on every successful scale-set VM write since 2022 (4799 in 2020).
_NOT_BUDGETS = frozenset({"vmssqueuedvmoperations"})
#: Scope suffixes, longest first: current ``...SubscriptionMaximum`` / ``...Resource``, and the
#: ``...Subscription`` the local Azure once used.
_SCOPES = (("subscriptionmaximum", False), ("subscription", False), ("resource", True))


def parse_policy(name: str) -> Policy:
    """``Microsoft.Compute/UpdateVMResource`` -> ``Policy(group=UPDATE_VM, per_resource=True)``.

    Both real formats (azure-recorded §4): current ``<Base>SubscriptionMaximum`` (per subscription)
    and ``<Base>Resource`` (per VM or scale-set VM), and legacy windowed ``<Base>3Min``/``30Min``
    (``window_s``; per subscription). A base that is not a modelled group gets ``group=None``
    (the registry learns a bucket for it); a known non-budget counter gets ``budget=False``.
    """
    key = name.strip().lower()
    core = re.sub(r"[^a-z0-9]", "", key.rsplit("/", 1)[-1])
    window_s = None
    if m := re.search(r"(\d+)(min|m|s|sec|h|hour)$", core):
        window_s = float(m[1]) * {"s": 1, "sec": 1, "h": 3600, "hour": 3600}.get(m[2], 60)
        core = core[: m.start()]
    per_resource = False
    for suffix, resource in _SCOPES:
        if core.endswith(suffix) and core != suffix:
            core, per_resource = core.removesuffix(suffix), resource
            break
    return Policy(key, _GROUPS.get(core), per_resource, window_s, core not in _NOT_BUDGETS)


def parse_throttle_body(body: str | bytes | None) -> tuple[str, list[str]]:
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


def parse_number(value: str | None) -> float | None:
    """A header's number, or ``None`` when absent or unreadable."""
    try:
        return float(value) if value else None
    except ValueError:
        return None
