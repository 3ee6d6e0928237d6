"""The ``$filter`` subsets ARM understands for ``/resources`` and Compute's VM lists.

Resources (azure-facts §5): ``tagName eq 'k' and tagValue eq 'v'``, ``tagName eq 'k'``,
``startswith(tagName,'x')``, ``resourceType eq 'T'``, ``name eq 'n'``, ``substringof('x', name)``,
``location eq 'l'``; only "substringof() and/or resourceType" style clauses combine, so a tag
filter combined with anything else is refused (``InvalidFilterInQueryString``), as ARM does.
Tag names match case-insensitively, tag values exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from azrun.sim.arm.errors import ArmError, invalid_parameter
from azrun.sim.model import Machine, ResourceEntry

_QUOTED = r"'((?:[^']|'')*)'"
_EQ = re.compile(rf"^(tagname|tagvalue|resourcetype|name|location)\s+eq\s+{_QUOTED}$", re.IGNORECASE)
_STARTSWITH = re.compile(rf"^startswith\(\s*tagname\s*,\s*{_QUOTED}\s*\)$", re.IGNORECASE)
_SUBSTRINGOF = re.compile(rf"^substringof\(\s*{_QUOTED}\s*,\s*name\s*\)$", re.IGNORECASE)
_SPLIT = re.compile(r"\s+(and|or)\s+(?=(?:[^']*'[^']*')*[^']*$)", re.IGNORECASE)
_VMSS_ID = re.compile(r"^'?virtualMachineScaleSet/id'?\s+eq\s+'?([^']+?)'?$", re.IGNORECASE)


def _bad(text: str) -> ArmError:
    return ArmError(
        400, "InvalidFilterInQueryString", f"Invalid $filter '{text[:256]}' specified in the query string."
    )


@dataclass(frozen=True)
class _Clause:
    field: str  # tagname | tagvalue | resourcetype | name | location | tagprefix | namecontains
    value: str

    def matches(self, e: ResourceEntry) -> bool:
        if self.field == "resourcetype":
            return e.type.lower() == self.value.lower()
        if self.field == "name":
            return e.name.lower() == self.value.lower()
        if self.field == "namecontains":
            return self.value.lower() in e.name.lower()
        if self.field == "location":
            return e.location.lower().replace(" ", "") == self.value.lower().replace(" ", "")
        if self.field == "tagname":
            return any(k.lower() == self.value.lower() for k, _ in e.tags)
        if self.field == "tagprefix":
            return any(k.lower().startswith(self.value.lower()) for k, _ in e.tags)
        return True


@dataclass(frozen=True)
class ResourceFilter:
    """A parsed resources ``$filter``: OR of AND-groups, or one tag query."""

    groups: tuple[tuple[_Clause, ...], ...] = ()
    tag: tuple[str, str] | None = None  # (name, value) of a tagName+tagValue query
    hides_tags: bool = field(default=False)

    def matches(self, e: ResourceEntry) -> bool:
        if self.tag is not None:
            name, value = self.tag
            return any(k.lower() == name.lower() and v == value for k, v in e.tags)
        if not self.groups:
            return True
        return any(all(c.matches(e) for c in group) for group in self.groups)


def _clause(text: str, whole: str) -> _Clause:
    if m := _EQ.match(text):
        return _Clause(m.group(1).lower(), m.group(2).replace("''", "'"))
    if m := _STARTSWITH.match(text):
        return _Clause("tagprefix", m.group(1).replace("''", "'"))
    if m := _SUBSTRINGOF.match(text):
        return _Clause("namecontains", m.group(1).replace("''", "'"))
    raise _bad(whole)


def parse_resource_filter(text: str | None) -> ResourceFilter:
    """Parse a ``/resources`` ``$filter``.

    Raises:
        ArmError: 400 ``InvalidFilterInQueryString`` for anything outside the subset, or a tag
            filter combined with other clauses.
    """
    if text is None or not text.strip():
        return ResourceFilter()
    whole = text.strip()
    parts = _SPLIT.split(whole)
    clauses = [_clause(p.strip(), whole) for p in parts[0::2]]
    joins = [j.lower() for j in parts[1::2]]
    tagish = [c for c in clauses if c.field in ("tagname", "tagvalue", "tagprefix")]
    if tagish:
        fields = sorted(c.field for c in clauses)
        if fields == ["tagname", "tagvalue"] and joins == ["and"]:
            by = {c.field: c.value for c in clauses}
            return ResourceFilter(tag=(by["tagname"], by["tagvalue"]), hides_tags=True)
        if len(clauses) == 1 and clauses[0].field != "tagvalue":
            return ResourceFilter(groups=((clauses[0],),))
        raise _bad(whole)
    groups: list[tuple[_Clause, ...]] = []
    current = [clauses[0]]
    for join, clause in zip(joins, clauses[1:], strict=True):
        if join == "or":
            groups.append(tuple(current))
            current = []
        current.append(clause)
    groups.append(tuple(current))
    return ResourceFilter(groups=tuple(groups))


def parse_vm_filter(text: str | None) -> str | None:
    """Compute's VM-list ``$filter``: only ``virtualMachineScaleSet/id eq '<id>'`` (lowercased id)."""
    if text is None or not text.strip():
        return None
    if m := _VMSS_ID.match(text.strip()):
        return m.group(1).lower()
    raise invalid_parameter("The value of parameter $filter is invalid.", "$filter")


def vm_matches(m: Machine, vmss_id: str | None) -> bool:
    if vmss_id is None:
        return True
    host = m.host
    name = getattr(host, "vmss", None)
    if not name:
        return False
    rid = f"/subscriptions/{m.subscription_id}/resourceGroups/{m.resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    return rid.lower() == vmss_id
