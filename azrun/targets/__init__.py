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
via ``send_request`` and is read as plain REST JSON, following ``nextLink``; see
:func:`azrun.paging.read_pages`.
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

The package, one idea per module: :mod:`._selector` (selector parsing and the rejection rules),
:mod:`._selection` (the result), :mod:`._resolve` (the resolution strategy: which listings, how
many requests), :mod:`._bodies` (REST JSON -> ``Target``). Raw paging lives beside the SDK glue,
in :mod:`azrun.paging`. Import everything from ``azrun.targets``.
"""

from __future__ import annotations

from azrun.paging import Listing, PageReader, read_pages
from azrun.targets._bodies import power_by_id
from azrun.targets._resolve import resolve
from azrun.targets._selection import NotSelected, Selection
from azrun.targets._selector import OS_CHOICES, Selector, TagFilter, parse_tags

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
