"""Resolution strategy: which ARM listings answer a :class:`Selector`, in how few requests.

See :mod:`azrun.targets` for the requests per subscription. Listings are read through
:func:`azrun.paging.read_pages` (or the ``pages`` reader a caller passes) and their errors are
translated by :func:`azrun.azerrors.map_azure_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from azrun.azerrors import map_azure_errors
from azrun.errors import ConfigError
from azrun.models import SkippedTarget, Target, TargetKind
from azrun.paging import Listing, PageReader, read_pages
from azrun.targets._bodies import (
    ScaleSet,
    get,
    instance_target,
    power_by_id,
    power_of,
    power_reason,
    scale_set_id,
    scale_set_of,
    slim_status,
    slim_vm,
    tags_of,
    vm_target,
)
from azrun.targets._selection import NotSelected, Selection
from azrun.targets._selector import Selector, TagFilter, unique

if TYPE_CHECKING:
    from azrun.clients import ClientFactory

__all__ = ["COMPUTE_API", "RESOURCES_API", "SUBSCRIPTIONS_API", "resolve"]

T = TypeVar("T")
COMPUTE_API = "2024-11-01"
RESOURCES_API = "2021-04-01"
SUBSCRIPTIONS_API = "2022-12-01"
_VM_TYPE = "microsoft.compute/virtualmachines"
_VMSS_TYPE = "microsoft.compute/virtualmachinescalesets"


async def resolve(
    selector: Selector,
    factory: ClientFactory,
    *,
    default_subscriptions: Sequence[str] = (),
    explain: bool = False,
    concurrency: int = 16,
    pages: PageReader | None = None,
) -> Selection:
    """Resolve ``selector`` against ARM through ``factory``'s aio clients.

    Args:
        default_subscriptions: the scope when the selector names none and does not ask for all
            (the CLI passes ``AZURE_SUBSCRIPTION_ID`` / the config file's ``subscription``).
        explain: also collect every machine in scope that was not selected (costs the tag
            pre-filter and one listing per Uniform scale set rejected early).
        concurrency: listings in flight at once, across subscriptions and scale sets.
        pages: how one paged listing is read (default :func:`read_pages`, through the client's
            pipeline); tests and instrumentation wrap it.

    Raises:
        ConfigError: no subscription to look in, or a selector that fails :meth:`Selector.check`.
        TargetError: a subscription does not exist or is not visible to the identity.
        PermissionDenied, ThrottledError, AuthError: from :mod:`azrun.azerrors`.
    """
    selector.check()
    resolver = _Resolver(selector, factory, explain=explain, limit=asyncio.Semaphore(max(1, concurrency)),
                         pages=pages or read_pages)
    subscriptions = await resolver.scope(default_subscriptions)
    parts = await _all(resolver.subscription(s) for s in subscriptions)
    targets = [t for p in parts for t in p.targets]
    skipped = [s for p in parts for s in p.skipped]
    not_selected = [n for p in parts for n in p.not_selected]
    return Selection(
        selector=selector,
        targets=tuple(sorted(targets, key=lambda t: t.sort_key)),
        skipped=tuple(sorted(skipped, key=lambda s: s.target.sort_key)),
        subscriptions=tuple(subscriptions),
        arm_requests=resolver.requests,
        not_selected=tuple(sorted(not_selected, key=lambda n: n.sort_key)),
    )


async def _all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """gather() that cancels (and awaits) the rest when one fails, and raises that error as is."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@dataclass
class _Part:
    targets: list[Target] = field(default_factory=list)
    skipped: list[SkippedTarget] = field(default_factory=list)
    not_selected: list[NotSelected] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Candidates:
    vms: frozenset[str]  # lower-cased ids from the tag-filtered resource list
    scale_sets: frozenset[str]


class _Resolver:
    """One resolution: the clients, the concurrency bound and the request count."""

    def __init__(
        self, selector: Selector, factory: ClientFactory, *, explain: bool, limit: asyncio.Semaphore, pages: PageReader
    ) -> None:
        self.sel = selector
        self.factory = factory
        self.explain = explain
        self.limit = limit
        self.pages = pages
        self.requests = 0

    async def _collect(
        self, listing: Listing, each: Callable[[Any], dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a paged ARM listing (one request per page), errors mapped to azrun's;
        ``each`` keeps only what is needed of an item, page by page."""
        items: list[dict[str, Any]] = []
        async with self.limit:
            with map_azure_errors(listing.what, subscription=listing.subscription, action=listing.action):
                async for page in self.pages(listing):
                    self.requests += 1
                    items.extend(page if each is None else map(each, page))
        return items

    async def scope(self, defaults: Sequence[str]) -> list[str]:
        if self.sel.subscriptions:
            return list(self.sel.subscriptions)
        if not self.sel.all_subscriptions:
            subs = list(unique(s.lower() for s in defaults if s))
            if not subs:
                raise ConfigError(
                    "no subscription to look in",
                    hint="pass --subscription ID or --all-subscriptions, or set AZURE_SUBSCRIPTION_ID",
                )
            return subs
        found = await self._collect(Listing(
            self.factory.asubscriptions(), "/subscriptions", {"api-version": SUBSCRIPTIONS_API},
            "listing subscriptions", None, "Microsoft.Resources/subscriptions/read",
        ))
        usable = [s for s in found if str(s.get("state") or "Enabled").lower() not in ("disabled", "deleted")]
        return sorted({str(s["subscriptionId"]).lower() for s in usable})

    async def subscription(self, sub: str) -> _Part:
        part = _Part()
        first = self.sel.tags[0] if self.sel.tags and not self.explain else None
        cand = await self._candidates(sub, first) if first is not None else None
        if cand is not None and not cand.vms and not cand.scale_sets:
            return part
        need_vms = cand is None or bool(cand.vms)
        vm_bodies, status_bodies, ss_bodies = await _all([
            self._list_vms(sub) if need_vms else _empty(),
            self._list_vm_status(sub) if need_vms else _empty(),
            self._list_scale_sets(sub),
        ])
        scale_sets = {ss.id.lower(): ss for ss in map(scale_set_of, ss_bodies)}
        power = power_by_id(status_bodies)
        for body in vm_bodies:
            self._consider(part, vm_target(body, sub, scale_sets, power.get(str(body["id"]).lower(), "unknown")), cand)
        jobs: list[Awaitable[list[Target]]] = []
        for ss in sorted(scale_sets.values(), key=lambda s: s.id.lower()):
            if not self.sel.in_scope(ss.resource_group) or (cand is not None and ss.id.lower() not in cand.scale_sets):
                continue
            if ss.uniform:
                reason = self.sel.scale_set_rejection(ss.name, ss.os, ss.tags)
                if reason is None:
                    jobs.append(self._instances(ss))
                elif self.explain:
                    part.not_selected.append(NotSelected(f"{ss.name}/*", TargetKind.VMSS_UNIFORM.value, ss.id,
                                                         ss.subscription_id, ss.resource_group, f"scale set: {reason}"))
            elif not need_vms:
                jobs.append(self._flex_members(ss, scale_sets))
        for targets in await _all(jobs):
            for t in targets:
                self._consider(part, t, None)
        return part

    def _consider(self, part: _Part, t: Target, cand: _Candidates | None) -> None:
        if not self.sel.in_scope(t.resource_group):
            return
        if cand is not None and t.resource_id.lower() not in cand.vms and (
            scale_set_id(t.resource_id, t.scale_set).lower() not in cand.scale_sets
        ):
            return
        reason = self.sel.rejection(t)
        if reason is not None:
            if self.explain:
                part.not_selected.append(NotSelected.of(t, reason))
        elif t.running or self.sel.include_stopped:
            part.targets.append(t)
        else:
            part.skipped.append(SkippedTarget(t, power_reason(t)))

    async def _candidates(self, sub: str, first: TagFilter) -> _Candidates:
        rows = await self._collect(Listing(
            self.factory.aresources(sub), f"/subscriptions/{sub}/resources",
            {"$filter": first.odata(), "api-version": RESOURCES_API},
            f"listing resources tagged {first.key}", sub, "Microsoft.Resources/subscriptions/resources/read",
        ))
        # A tagName+tagValue filter is exact and hides the tags; a tagName-only one (several
        # values, or any value) returns them, so the values are checked here.
        exact = first.values is not None and len(first.values) == 1
        vms: set[str] = set()
        scale_sets: set[str] = set()
        for row in rows:
            kind = str(row.get("type") or "").lower()
            if not exact and not first.matches(tags_of(row.get("tags"))):
                continue
            if kind == _VM_TYPE:
                vms.add(str(row["id"]).lower())
            elif kind == _VMSS_TYPE:
                scale_sets.add(str(row["id"]).lower())
        return _Candidates(frozenset(vms), frozenset(scale_sets))

    def _compute(self, sub: str, path: str, params: dict[str, str], what: str, action: str) -> Listing:
        return Listing(
            self.factory.acompute(sub), f"/subscriptions/{sub}/{path}", {**params, "api-version": COMPUTE_API},
            what, sub, action,
        )

    async def _list_vms(self, sub: str) -> list[dict[str, Any]]:
        """The VMs' model (tags, OS, identity, scale set): plain ListAll, no instance view."""
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachines", {},
            "listing virtual machines", "Microsoft.Compute/virtualMachines/read",
        ), slim_vm)

    async def _list_vm_status(self, sub: str) -> list[dict[str, Any]]:
        """The VMs' power states: ListAll?statusOnly=true (status stubs without the model)."""
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachines", {"statusOnly": "true"},
            "listing virtual machine states", "Microsoft.Compute/virtualMachines/read",
        ), slim_status)

    async def _list_scale_sets(self, sub: str) -> list[dict[str, Any]]:
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachineScaleSets", {},
            "listing scale sets", "Microsoft.Compute/virtualMachineScaleSets/read",
        ))

    async def _instances(self, ss: ScaleSet) -> list[Target]:
        bodies = await self._collect(self._compute(
            ss.subscription_id,
            f"resourceGroups/{quote(ss.resource_group, safe='')}/providers/Microsoft.Compute"
            f"/virtualMachineScaleSets/{quote(ss.name, safe='')}/virtualMachines",
            {"$expand": "instanceView"},
            f"listing instances of scale set {ss.name}", "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
        ))
        return [instance_target(b, ss) for b in bodies]

    async def _flex_members(self, ss: ScaleSet, scale_sets: Mapping[str, ScaleSet]) -> list[Target]:
        bodies = await self._collect(self._compute(
            ss.subscription_id,
            f"resourceGroups/{quote(ss.resource_group, safe='')}/providers/Microsoft.Compute/virtualMachines",
            {"$filter": f"'virtualMachineScaleSet/id' eq '{ss.id}'", "$expand": "instanceView"},
            f"listing members of scale set {ss.name}", "Microsoft.Compute/virtualMachines/read",
        ))
        return [vm_target(b, ss.subscription_id, scale_sets, power_of(get(b, "properties"))) for b in bodies]


async def _empty() -> list[dict[str, Any]]:
    return []
