"""Selector -> Selection: which machines a run touches, read from ARM in few requests.

A :class:`Selector` is what the user asked for (``--tag``, ``--name``, ``-g``, ``--os`` ...);
:func:`resolve` turns it into a :class:`Selection`: running :class:`~azrun.models.Target` s, the
matched machines that are stopped (:class:`~azrun.models.SkippedTarget`, with the reason), and,
when asked to explain, every machine in scope that was *not* selected and why.

Requests per subscription: a few listings plus one per selected Uniform scale set, never one
per VM (a VM listing page holds up to ARM's page size, 100 in the local Azure, of VMs):

1. with ``--tag``: one ``Resources_List`` filtered by the first tag (``tagName eq 'k' and tagValue
   eq 'v'``; ``tagName eq 'k'`` when several values or none are given). It narrows server-side:
   a subscription without a tagged VM or scale set costs nothing more. ARM omits the tags of
   rows filtered by tag name+value and cannot combine a tag with a type filter (azure-facts §5),
   so every other tag, the types and the first tag again are checked on Compute's own listing.
2. ``VirtualMachines_ListAll`` (the model: tags, OS, identity, ``virtualMachineScaleSet.id``; no
   instance view) and ``VirtualMachines_ListAll?statusOnly=true`` (the power state), both paged,
   listed concurrently and joined by resource id, compared case-insensitively. Real Azure answers
   statusOnly *without* the model (azure-recorded §1: id, name, type, location, ``vmId``,
   ``provisioningState``, ``instanceView.statuses``), so nothing but the id and the power state is
   read from it; a VM in the model listing that the status listing lacks (created between the two
   reads) has an unknown power state and is skipped. (The per-group list accepts
   ``$expand=instanceView`` only together with a ``$filter``, so two subscription-wide lists are
   both valid and cheapest; ``-g`` filters client-side.) Both are skipped when the tag query found
   no VM.
3. ``VirtualMachineScaleSets_ListAll``: scale-set tags, orchestration mode, OS and identity.
4. per selected Uniform scale set: ``VirtualMachineScaleSetVMs_List?$expand=instanceView`` (model
   and instance view in one answer). Flexible members come from (2), or, when (2) was skipped,
   from one ``VirtualMachines_List?$filter='virtualMachineScaleSet/id' eq ...&$expand=instanceView``
   per selected Flexible scale set (model and instance view; ids there may carry an upper-cased
   resource-group segment).

Every listing goes through the factory's aio clients (credential, throttle policy, retries, CA)
via ``send_request`` and is read as plain REST JSON, following ``nextLink``; see :func:`_pages`.
Subscriptions and scale sets are listed concurrently, at most ``concurrency`` at a time.
Resource Graph is not used (yet): the local Azure does not serve it.

Semantics:

* tags: several keys AND, several values of one key OR; a key given twice adds values; tag names
  match case-insensitively, values exactly (as ARM does). A tag on a scale set applies to its
  instances and members; a member's own tag wins over the scale set's for the same key, and a
  target's ``tags`` are these effective tags.
* ``--name`` globs (case-insensitive) match the display name (``vm-web-01``, ``vmss-api/3``),
  the VM name (``vmss-api_3``, Flexible ``vmss-flex_1a2b3c4d``) or the scale-set name.
* subscriptions and resource groups are the *scope*; the other options are filters. Machines
  outside the scope are never listed in the explanation.
* a machine that matches but is not running is skipped with a reason unless
  ``include_stopped``; its power state stays on the target for the run to decide.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from azrun.azerrors import map_azure_errors
from azrun.errors import ConfigError, NoTargetsMatched
from azrun.models import SkippedTarget, Target, TargetKind

if TYPE_CHECKING:
    from azrun.clients import ClientFactory

__all__ = [
    "OS_CHOICES",
    "Listing",
    "NotSelected",
    "PageReader",
    "Selection",
    "Selector",
    "TagFilter",
    "parse_tags",
    "power_by_id",
    "read_pages",
    "resolve",
]

T = TypeVar("T")
OS_CHOICES = ("linux", "windows")
COMPUTE_API = "2024-11-01"
RESOURCES_API = "2021-04-01"
SUBSCRIPTIONS_API = "2022-12-01"
_VM_TYPE = "microsoft.compute/virtualmachines"
_VMSS_TYPE = "microsoft.compute/virtualmachinescalesets"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SUB = re.compile(r"/subscriptions/([^/]+)", re.IGNORECASE)
_RG = re.compile(r"/resourceGroups/([^/]+)", re.IGNORECASE)
_VMSS_NAME = re.compile(r"/virtualMachineScaleSets/([^/]+)", re.IGNORECASE)
_TAG_HINT = "use --tag key=value, --tag key=value1,value2 or --tag key (any value)"
_SELECT_HINT = "add --tag/--name/-g, or --all to target every machine in scope"


# ----------------------------------------------------------------------------- the selector
@dataclass(frozen=True, slots=True)
class TagFilter:
    """``key`` present with one of ``values`` (any value when ``values`` is None)."""

    key: str
    values: frozenset[str] | None = None

    @classmethod
    def parse(cls, text: str, *, flag: str = "--tag") -> TagFilter:
        """``k=v``, ``k=v1,v2``, ``k`` (exists) or ``k=`` (empty value)."""
        key, sep, rest = text.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"{flag} {text!r}: the tag name is empty", hint=_TAG_HINT.replace("--tag", flag))
        if not sep:
            return cls(key)
        values = [v.strip() for v in rest.split(",")] if rest.strip() else [""]
        if len(values) > 1 and "" in values:
            raise ConfigError(f"{flag} {text!r}: an empty value in the list", hint=_TAG_HINT.replace("--tag", flag))
        return cls(key, frozenset(values))

    def lookup(self, tags: Mapping[str, str]) -> tuple[str, str] | None:
        """This filter's (name, value) in ``tags`` (names compare case-insensitively), or None."""
        wanted = self.key.lower()
        return next(((k, v) for k, v in tags.items() if k.lower() == wanted), None)

    def matches(self, tags: Mapping[str, str]) -> bool:
        found = self.lookup(tags)
        return found is not None and (self.values is None or found[1] in self.values)

    def mismatch(self, tags: Mapping[str, str]) -> str | None:
        """Why ``tags`` fail this filter, or None when they pass."""
        found = self.lookup(tags)
        if found is None:
            return f"has no tag {self.key!r} (--tag {self})"
        if self.values is not None and found[1] not in self.values:
            return f"tag {found[0]}={found[1]} does not match --tag {self}"
        return None

    def union(self, other: TagFilter) -> TagFilter:
        if self.values is None or other.values is None:
            return TagFilter(self.key)
        return TagFilter(self.key, self.values | other.values)

    def odata(self) -> str:
        """The ``Resources_List`` ``$filter`` that narrows server-side to this filter (or wider)."""
        key = self.key.replace("'", "''")
        if self.values is not None and len(self.values) == 1:
            (value,) = self.values
            return f"tagName eq '{key}' and tagValue eq '{value.replace(chr(39), chr(39) * 2)}'"
        return f"tagName eq '{key}'"

    def __str__(self) -> str:
        return self.key if self.values is None else f"{self.key}={','.join(sorted(self.values))}"


def parse_tags(texts: Iterable[str], *, flag: str = "--tag") -> tuple[TagFilter, ...]:
    """Parse repeated tag options; a key given twice (any case) accumulates values."""
    merged: dict[str, TagFilter] = {}
    for text in texts:
        f = TagFilter.parse(text, flag=flag)
        old = merged.get(f.key.lower())
        merged[f.key.lower()] = old.union(f) if old else f
    return tuple(merged.values())


@dataclass(frozen=True, slots=True)
class Selector:
    """Which machines: scope (subscriptions, resource groups) and filters (tags, names, OS)."""

    tags: tuple[TagFilter, ...] = ()
    exclude_tags: tuple[TagFilter, ...] = ()
    subscriptions: tuple[str, ...] = ()
    all_subscriptions: bool = False
    resource_groups: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    os: str | None = None
    include_stopped: bool = False
    select_all: bool = False

    @classmethod
    def from_options(
        cls,
        *,
        tags: Iterable[str] = (),
        exclude_tags: Iterable[str] = (),
        subscriptions: Iterable[str] = (),
        all_subscriptions: bool = False,
        resource_groups: Iterable[str] = (),
        names: Iterable[str] = (),
        os: str | None = None,
        include_stopped: bool = False,
        select_all: bool = False,
    ) -> Selector:
        """Build and validate a selector from command-line style values.

        Raises:
            ConfigError: bad syntax, an unknown OS, a malformed subscription id, conflicting
                subscription options, or no narrowing option without ``select_all``.
        """
        selector = cls(
            tags=parse_tags(tags, flag="--tag"),
            exclude_tags=parse_tags(exclude_tags, flag="--exclude-tag"),
            subscriptions=_subscription_ids(subscriptions),
            all_subscriptions=all_subscriptions,
            resource_groups=_unique(_non_empty(resource_groups, "--resource-group")),
            names=_unique(_non_empty(names, "--name")),
            os=_os_choice(os),
            include_stopped=include_stopped,
            select_all=select_all,
        )
        selector.check()
        return selector

    @property
    def is_empty(self) -> bool:
        """No narrowing option: it would select every machine in scope."""
        return not (self.tags or self.names or self.resource_groups)

    def check(self) -> None:
        """Refuse a selector that would target a whole estate by accident, or contradicts itself."""
        if self.subscriptions and self.all_subscriptions:
            raise ConfigError(
                "--subscription and --all-subscriptions exclude each other",
                hint="name the subscriptions, or use --all-subscriptions alone",
            )
        if self.is_empty and not self.select_all:
            raise ConfigError("no machine selector given", hint=_SELECT_HINT)

    def in_scope(self, resource_group: str) -> bool:
        return not self.resource_groups or resource_group.lower() in {g.lower() for g in self.resource_groups}

    def rejection(self, target: Target) -> str | None:
        """Why a machine in scope is not selected, or None when the filters pass."""
        if self.names and not any(_glob(p, n) for p in self.names for n in _names_of(target)):
            return f"name does not match --name {' '.join(self.names)}"
        return self._os_rejection(target.os) or self._tag_rejection(target.tag_dict())

    def scale_set_rejection(self, name: str, os: str, tags: Mapping[str, str]) -> str | None:
        """Why no instance of a Uniform scale set can be selected (saves listing it), or None."""
        if self.names and not any(_could_match_instances(p, name) for p in self.names):
            return f"no instance name can match --name {' '.join(self.names)}"
        return self._os_rejection(os, unknown_ok=True) or self._tag_rejection(tags)

    def _os_rejection(self, os: str, *, unknown_ok: bool = False) -> str | None:
        if self.os is None or os == self.os or (unknown_ok and os == "unknown"):
            return None
        return f"OS is {os}, not {self.os}"

    def _tag_rejection(self, tags: Mapping[str, str]) -> str | None:
        for f in self.tags:
            if (reason := f.mismatch(tags)) is not None:
                return reason
        for f in self.exclude_tags:
            if f.matches(tags):
                return f"excluded by --exclude-tag {f}"
        return None

    def describe(self) -> str:
        """The selector as flags, for messages ("--tag env=prod -g rg-web")."""
        parts = [f"--tag {f}" for f in self.tags]
        parts += [f"--exclude-tag {f}" for f in self.exclude_tags]
        parts += [f"-g {g}" for g in self.resource_groups]
        parts += [f"--name {n!r}" for n in self.names]
        parts += [f"--os {self.os}"] if self.os else []
        return " ".join(parts) or "--all"


def _subscription_ids(values: Iterable[str]) -> tuple[str, ...]:
    out = _unique(_non_empty(values, "--subscription"))
    for sub in out:
        if not _GUID.match(sub):
            raise ConfigError(
                f"--subscription {sub!r} is not a subscription id",
                hint="use the subscription's GUID (`azrun auth check` lists the visible ones)",
            )
    return tuple(s.lower() for s in out)


def _non_empty(values: Iterable[str], flag: str) -> list[str]:
    out = [v.strip() for v in values]
    if any(not v for v in out):
        raise ConfigError(f"{flag} needs a value", hint=f"e.g. {flag} NAME")
    return out


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for v in values:
        seen.setdefault(v.lower(), v)
    return tuple(seen.values())


def _os_choice(os: str | None) -> str | None:
    if os is None:
        return None
    if os.strip().lower() not in OS_CHOICES:
        raise ConfigError(f"--os {os!r}: unknown OS", hint=f"choose one of: {', '.join(OS_CHOICES)}")
    return os.strip().lower()


def _glob(pattern: str, name: str) -> bool:
    return bool(name) and fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _names_of(t: Target) -> tuple[str, ...]:
    return (t.name, t.vm_name, t.scale_set or "")


def _could_match_instances(pattern: str, scale_set: str) -> bool:
    """Whether a glob can match some instance of ``scale_set`` (by any of its names)."""
    if _glob(pattern, scale_set):
        return True
    p, ss = pattern.lower(), scale_set.lower()
    literal = re.split(r"[*?\[]", p, maxsplit=1)[0]
    return ss.startswith(literal) or literal.startswith((f"{ss}/", f"{ss}_"))


# ----------------------------------------------------------------------------- the result
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


# ----------------------------------------------------------------------------- resolution
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
class _ScaleSet:
    id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    uniform: bool
    os: str
    tags: dict[str, str]
    identity: tuple[bool, tuple[str, ...]]


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

    async def _collect(self, listing: Listing) -> list[dict[str, Any]]:
        """Every item of a paged ARM listing (one request per page), errors mapped to azrun's."""
        items: list[dict[str, Any]] = []
        async with self.limit:
            with map_azure_errors(listing.what, subscription=listing.subscription, action=listing.action):
                async for page in self.pages(listing):
                    self.requests += 1
                    items.extend(page)
        return items

    async def scope(self, defaults: Sequence[str]) -> list[str]:
        if self.sel.subscriptions:
            return list(self.sel.subscriptions)
        if not self.sel.all_subscriptions:
            subs = list(_unique(s.lower() for s in defaults if s))
            if not subs:
                raise ConfigError(
                    "no subscription to look in",
                    hint="pass --subscription ID or --all-subscriptions, or set AZURE_SUBSCRIPTION_ID",
                )
            return subs
        found = await self._collect(Listing(
            self.factory.aio_subscriptions(), "/subscriptions", {"api-version": SUBSCRIPTIONS_API},
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
        scale_sets = {ss.id.lower(): ss for ss in map(_scale_set, ss_bodies)}
        power = power_by_id(status_bodies)
        for body in vm_bodies:
            self._consider(part, _vm_target(body, sub, scale_sets, power.get(str(body["id"]).lower(), "unknown")), cand)
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
            _scale_set_id(t.resource_id, t.scale_set).lower() not in cand.scale_sets
        ):
            return
        reason = self.sel.rejection(t)
        if reason is not None:
            if self.explain:
                part.not_selected.append(NotSelected.of(t, reason))
        elif t.running or self.sel.include_stopped:
            part.targets.append(t)
        else:
            part.skipped.append(SkippedTarget(t, _power_reason(t)))

    async def _candidates(self, sub: str, first: TagFilter) -> _Candidates:
        rows = await self._collect(Listing(
            self.factory.aio_resources(sub), f"/subscriptions/{sub}/resources",
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
            if not exact and not first.matches(_tags(row.get("tags"))):
                continue
            if kind == _VM_TYPE:
                vms.add(str(row["id"]).lower())
            elif kind == _VMSS_TYPE:
                scale_sets.add(str(row["id"]).lower())
        return _Candidates(frozenset(vms), frozenset(scale_sets))

    def _compute(self, sub: str, path: str, params: dict[str, str], what: str, action: str) -> Listing:
        return Listing(
            self.factory.aio_compute(sub), f"/subscriptions/{sub}/{path}", {**params, "api-version": COMPUTE_API},
            what, sub, action,
        )

    async def _list_vms(self, sub: str) -> list[dict[str, Any]]:
        """The VMs' model (tags, OS, identity, scale set): plain ListAll, no instance view."""
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachines", {},
            "listing virtual machines", "Microsoft.Compute/virtualMachines/read",
        ))

    async def _list_vm_status(self, sub: str) -> list[dict[str, Any]]:
        """The VMs' power states: ListAll?statusOnly=true (status stubs without the model)."""
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachines", {"statusOnly": "true"},
            "listing virtual machine states", "Microsoft.Compute/virtualMachines/read",
        ))

    async def _list_scale_sets(self, sub: str) -> list[dict[str, Any]]:
        return await self._collect(self._compute(
            sub, "providers/Microsoft.Compute/virtualMachineScaleSets", {},
            "listing scale sets", "Microsoft.Compute/virtualMachineScaleSets/read",
        ))

    async def _instances(self, ss: _ScaleSet) -> list[Target]:
        bodies = await self._collect(self._compute(
            ss.subscription_id,
            f"resourceGroups/{quote(ss.resource_group, safe='')}/providers/Microsoft.Compute"
            f"/virtualMachineScaleSets/{quote(ss.name, safe='')}/virtualMachines",
            {"$expand": "instanceView"},
            f"listing instances of scale set {ss.name}", "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
        ))
        return [_instance_target(b, ss) for b in bodies]

    async def _flex_members(self, ss: _ScaleSet, scale_sets: Mapping[str, _ScaleSet]) -> list[Target]:
        bodies = await self._collect(self._compute(
            ss.subscription_id,
            f"resourceGroups/{quote(ss.resource_group, safe='')}/providers/Microsoft.Compute/virtualMachines",
            {"$filter": f"'virtualMachineScaleSet/id' eq '{ss.id}'", "$expand": "instanceView"},
            f"listing members of scale set {ss.name}", "Microsoft.Compute/virtualMachines/read",
        ))
        return [_vm_target(b, ss.subscription_id, scale_sets, _power(_get(b, "properties"))) for b in bodies]


@dataclass(frozen=True, slots=True)
class Listing:
    """One paged ARM GET: which client's pipeline, the first page's path and query, error context."""

    client: Any  # an aio management client from ClientFactory (its pipeline: auth, throttle, retry, CA)
    path: str
    params: dict[str, str]
    what: str
    subscription: str | None
    action: str


#: Reads one paged listing: yields each page's items (one request per page).
PageReader = Callable[["Listing"], AsyncIterator[list[dict[str, Any]]]]


async def read_pages(listing: Listing) -> AsyncIterator[list[dict[str, Any]]]:
    """Follow ``nextLink`` through the client's pipeline, yielding each page's ``value`` as JSON.

    The list is read as plain JSON through ``send_request`` (the SDKs' documented escape hatch)
    rather than the operation groups: their model deserialisation costs milliseconds per VM,
    which dominated selecting from a few thousand machines, and azrun reads REST shapes anyway.
    """
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    url: str | None = listing.path
    params: dict[str, str] | None = listing.params
    while url:
        response = await listing.client.send_request(HttpRequest("GET", url, params=params))
        if response.status_code != 200:
            error = ClientAuthenticationError if response.status_code == 401 else HttpResponseError
            raise error(response=response, error_format=ARMErrorFormat)
        body = response.json()
        yield [item for item in body.get("value") or () if isinstance(item, dict)]
        url, params = body.get("nextLink") or None, None


async def _empty() -> list[dict[str, Any]]:
    return []


# ----------------------------------------------------------------------------- ARM bodies -> values
def _get(body: Any, *path: str) -> Any:
    """``body[path0][path1]...`` over REST-shaped mappings, None when any step is missing."""
    node = body
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _tags(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _effective_tags(scale_set: _ScaleSet | None, own: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    merged = {k.lower(): (k, v) for k, v in (scale_set.tags if scale_set else {}).items()}
    merged.update({k.lower(): (k, v) for k, v in own.items()})
    return tuple(sorted(merged.values(), key=lambda kv: kv[0].lower()))


def _os(props: Any) -> str:
    os_type = _get(props, "storageProfile", "osDisk", "osType")
    if os_type:
        return str(os_type).lower()
    if _get(props, "osProfile", "windowsConfiguration") is not None:
        return "windows"
    if _get(props, "osProfile", "linuxConfiguration") is not None:
        return "linux"
    return "unknown"


def _power(props: Any) -> str:
    for status in _get(props, "instanceView", "statuses") or ():
        code = str(_get(status, "code") or "")
        if code.lower().startswith("powerstate/"):
            return code.split("/", 1)[1].lower()
    return "unknown"


def _identity(block: Any) -> tuple[bool, tuple[str, ...]]:
    kind = str(_get(block, "type") or "").replace(" ", "").lower()
    users = _get(block, "userAssignedIdentities")
    client_ids = sorted(
        str(v["clientId"]) for v in (users.values() if isinstance(users, Mapping) else ()) if _get(v, "clientId")
    )
    return "systemassigned" in kind, tuple(client_ids)


def _part(pattern: re.Pattern[str], resource_id: str, default: str = "") -> str:
    m = pattern.search(resource_id)
    return m.group(1) if m else default


def _scale_set_id(resource_id: str, scale_set: str | None) -> str:
    if not scale_set:
        return ""
    head = resource_id.split("/providers/", 1)[0]
    return f"{head}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"


def _scale_set(body: Any) -> _ScaleSet:
    rid = str(body["id"])
    props = _get(body, "properties")
    profile = _get(props, "virtualMachineProfile")
    return _ScaleSet(
        id=rid,
        name=str(body.get("name") or _part(_VMSS_NAME, rid)),
        subscription_id=_part(_SUB, rid).lower(),
        resource_group=_part(_RG, rid),
        location=str(body.get("location") or ""),
        uniform=str(_get(props, "orchestrationMode") or "Uniform").lower() == "uniform",
        os=_os(profile) if profile is not None else "unknown",
        tags=_tags(body.get("tags")),
        identity=_identity(body.get("identity")),
    )


def power_by_id(status_bodies: Iterable[Any]) -> dict[str, str]:
    """``{lower-cased resource id: power state}`` from ``ListAll?statusOnly=true`` items.

    Reads only ``id`` and ``properties.instanceView.statuses``: the rest of a statusOnly item is
    not the model on real Azure (tags nil, no OS, identity or scale set).
    """
    return {str(b["id"]).lower(): _power(_get(b, "properties")) for b in status_bodies if _get(b, "id")}


def _vm_target(body: Any, sub: str, scale_sets: Mapping[str, _ScaleSet], power_state: str) -> Target:
    """A standalone VM or a Flexible member (``properties.virtualMachineScaleSet.id`` set), from
    its model; ``power_state`` comes from wherever the instance view was read."""
    rid, name, props = str(body["id"]), str(body["name"]), _get(body, "properties")
    vmss_id = str(_get(props, "virtualMachineScaleSet", "id") or "")
    ss = scale_sets.get(vmss_id.lower()) if vmss_id else None
    system, users = _identity(body.get("identity"))
    rg = _part(_RG, rid)
    if ss is not None and ss.resource_group.lower() == rg.lower():
        rg = ss.resource_group  # Flexible members' ids may upper-case it: show the scale set's spelling
    return Target(
        resource_id=rid,
        name=name,
        kind=TargetKind.VMSS_FLEX if vmss_id else TargetKind.VM,
        subscription_id=_part(_SUB, rid, sub).lower(),
        resource_group=rg,
        location=str(body.get("location") or ""),
        os=_os(props),
        power_state=power_state,
        tags=_effective_tags(ss, _tags(body.get("tags"))),
        scale_set=_part(_VMSS_NAME, vmss_id) if vmss_id else None,
        vm_name=name,
        system_identity=system,
        user_identity_client_ids=users,
    )


def _instance_target(body: Any, ss: _ScaleSet) -> Target:
    """A Uniform instance: identities come from its scale set, the OS from itself or the model."""
    rid, props = str(body["id"]), _get(body, "properties")
    instance_id = str(body.get("instanceId") or rid.rsplit("/", 1)[-1])
    os = _os(props)
    return Target(
        resource_id=rid,
        name=f"{ss.name}/{instance_id}",
        kind=TargetKind.VMSS_UNIFORM,
        subscription_id=ss.subscription_id,
        resource_group=ss.resource_group,
        location=str(body.get("location") or ss.location),
        os=ss.os if os == "unknown" else os,
        power_state=_power(props),
        tags=_effective_tags(ss, _tags(body.get("tags"))),
        scale_set=ss.name,
        instance_id=instance_id,
        vm_name=str(body.get("name") or f"{ss.name}_{instance_id}"),
        system_identity=ss.identity[0],
        user_identity_client_ids=ss.identity[1],
    )


def _power_reason(t: Target) -> str:
    noun = "instance" if t.kind is TargetKind.VMSS_UNIFORM else "VM"
    state = "in an unknown power state" if t.power_state == "unknown" else t.power_state
    return f"{noun} is {state} (use --include-stopped to include it)"
