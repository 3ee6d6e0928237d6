"""What the user asked for: tag filters and the :class:`Selector` (scope and filters), parsed
and validated from command-line style values, and the rules that reject a machine (no I/O)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from azrun.errors import ConfigError
from azrun.models import Target

__all__ = ["OS_CHOICES", "Selector", "TagFilter", "parse_tags", "unique"]

OS_CHOICES = ("linux", "windows")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TAG_HINT = "use --tag key=value, --tag key=value1,value2 or --tag key (any value)"
_SELECT_HINT = "add --tag/--name/-g, or --all to target every machine in scope"


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
            resource_groups=unique(_non_empty(resource_groups, "--resource-group")),
            names=unique(_non_empty(names, "--name")),
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
        """True when ``resource_group`` is one the selector allows."""
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
    out = unique(_non_empty(values, "--subscription"))
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


def unique(values: Iterable[str]) -> tuple[str, ...]:
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

