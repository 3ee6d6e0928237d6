"""azrun.targets._resolve: resolution against a local Azure with a fleet of its own.

The fleet spans two subscriptions and several resource groups with standalone VMs, Uniform and
Flexible scale sets, stopped machines and an identity without access to the second
subscription. ``page_size = 3`` makes every listing (resources, VMs, scale sets, instances)
take several pages, so paging is exercised by every resolution.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from azrun.errors import ConfigError, NoTargetsMatched, PermissionDenied, TargetError
from azrun.models import TargetKind
from azrun.targets import (
    Listing,
    Selection,
    Selector,
    read_pages,
    resolve,
)

SUB_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
SUB_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
SUB_MISSING = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"

FLEET = f"""
[sim]
current_vm = "rg-misc/vm-untagged"
page_size = 3
agent_start_delay_s = 0.05

[[subscription]]
id = "{SUB_A}"
name = "A"
  [subscription.access]
  "id-limited" = "reader"
  [[subscription.identity]]
  name = "id-limited"
  resource_group = "rg-misc"

  [[subscription.resource_group]]
  name = "rg-web"
    [[subscription.resource_group.vm]]
    name = "vm-web-{{i:02d}}"
    count = 4
    tags = {{ env = "prod", role = "web" }}
    [[subscription.resource_group.vm]]
    name = "vm-web-05"
    tags = {{ env = "staging", role = "web" }}
    [[subscription.resource_group.vm]]
    name = "vm-web-off"
    power = "deallocated"
    tags = {{ env = "prod", role = "web" }}

  [[subscription.resource_group]]
  name = "rg-win"
    [[subscription.resource_group.vm]]
    name = "win-01"
    os = "windows"
    tags = {{ env = "prod", role = "app" }}
    [[subscription.resource_group.vm]]
    name = "win-02"
    os = "windows"
    power = "stopped"
    tags = {{ env = "prod", role = "app" }}

  [[subscription.resource_group]]
  name = "rg-scale"
    [[subscription.resource_group.vmss]]
    name = "vmss-api"
    orchestration = "Uniform"
    instances = 5
    tags = {{ env = "prod", role = "api" }}
    instance_power = {{ "4" = "deallocated" }}
    system_identity = true
    [[subscription.resource_group.vmss]]
    name = "vmss-flex"
    orchestration = "Flexible"
    instances = 3
    tags = {{ env = "prod", role = "batch" }}
    member_tags = {{ team = "data" }}
    [[subscription.resource_group.vmss]]
    name = "vmss-dev"
    orchestration = "Uniform"
    instances = 2
    tags = {{ env = "dev", role = "api" }}

  [[subscription.resource_group]]
  name = "rg-misc"
    [[subscription.resource_group.vm]]
    name = "vm-untagged"
    system_identity = true
    user_identities = ["id-limited"]
    [[subscription.resource_group.vmss]]
    name = "vmss-flex2"
    orchestration = "Flexible"
    instances = 2
    member_tags = {{ env = "prod", role = "worker" }}

[[subscription]]
id = "{SUB_B}"
name = "B"
  [subscription.access]
  "id-limited" = "none"
  [[subscription.resource_group]]
  name = "rg-b"
    [[subscription.resource_group.vm]]
    name = "vm-b-{{i:02d}}"
    count = 2
    tags = {{ env = "prod", role = "web" }}
    [[subscription.resource_group.vm]]
    name = "vm-b-dev"
    tags = {{ env = "dev", role = "web" }}
  [[subscription.resource_group]]
  name = "rg-bscale"
    [[subscription.resource_group.vmss]]
    name = "vmss-b"
    orchestration = "Uniform"
    instances = 2
    tags = {{ env = "prod", role = "web" }}
"""

WEB_PROD = {"vm-web-01", "vm-web-02", "vm-web-03", "vm-web-04"}
API_RUNNING = {"vmss-api/0", "vmss-api/1", "vmss-api/2", "vmss-api/3"}


# ----------------------------------------------------------------------------- against the local Azure
@pytest.fixture(scope="module")
def fleet_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from azrun.sim.launcher import SimProcess

    sim = SimProcess(FLEET, workdir=tmp_path_factory.mktemp("targets-sim"), storage=False)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
async def select(
    fleet_sim: Any, azure_env: Callable[[Any], dict[str, str]]
) -> AsyncIterator[Callable[..., Any]]:
    """``await select(explain=False, **options)`` resolves with the sim's default subscription."""
    from azrun.clients import ClientFactory

    azure_env(fleet_sim)
    factories: list[ClientFactory] = []

    async def run(*, explain: bool = False, client_id: str | None = None, **options: Any) -> Selection:
        from azrun.auth import IdentitySelector

        identity = IdentitySelector(client_id=client_id) if client_id else None
        factory = ClientFactory.from_env(identity=identity)
        factories.append(factory)
        selector = Selector.from_options(**options)
        return await resolve(selector, factory, default_subscriptions=[SUB_A], explain=explain)

    yield run
    for factory in factories:
        await factory.aclose()


def names(items: Any) -> set[str]:
    return {getattr(i, "target", i).name for i in items}


def _flex_members(prefix: str, count: int) -> set[str]:
    from azrun.sim.fleetspec import load_fleet

    fleet = load_fleet(FLEET)
    found = {v.name for v in fleet.vms if v.vmss == prefix}
    assert len(found) == count
    return found


FLEX = _flex_members("vmss-flex", 3)
FLEX2 = _flex_members("vmss-flex2", 2)


@pytest.mark.parametrize(
    ("options", "selected", "skipped"),
    [
        pytest.param({"tags": ["env=prod"]}, WEB_PROD | {"win-01"} | API_RUNNING | FLEX | FLEX2,
                     {"vm-web-off", "win-02", "vmss-api/4"}, id="one-tag"),
        pytest.param({"tags": ["env=prod,staging", "role=web"]}, WEB_PROD | {"vm-web-05"}, {"vm-web-off"},
                     id="values-or-keys-and"),
        pytest.param({"tags": ["role"], "resource_groups": ["rg-scale", "rg-misc"]},
                     API_RUNNING | FLEX | FLEX2 | {"vmss-dev/0", "vmss-dev/1"}, {"vmss-api/4"}, id="key-exists"),
        pytest.param({"tags": ["env=prod", "team=data"]}, FLEX, set(), id="scale-set-tag-and-member-tag"),
        pytest.param({"tags": ["role=worker"]}, FLEX2, set(), id="member-tag-selects-member"),
        pytest.param({"tags": ["env=prod"], "exclude_tags": ["role=web", "role=api"]}, {"win-01"} | FLEX | FLEX2,
                     {"win-02"}, id="exclude-tag"),
        pytest.param({"select_all": True, "resource_groups": ["rg-scale"]},
                     API_RUNNING | FLEX | {"vmss-dev/0", "vmss-dev/1"}, {"vmss-api/4"}, id="resource-group"),
        pytest.param({"resource_groups": ["rg-web", "RG-WIN"], "os": "windows"}, {"win-01"}, {"win-02"},
                     id="os-windows"),
        pytest.param({"resource_groups": ["rg-win"], "os": "linux"}, set(), set(), id="os-nothing"),
        pytest.param({"names": ["vm-web-0*"]}, WEB_PROD | {"vm-web-05"}, set(), id="name-glob"),
        pytest.param({"names": ["vmss-api"]}, API_RUNNING, {"vmss-api/4"}, id="name-of-scale-set"),
        pytest.param({"names": ["VMSS-*/1"]}, {"vmss-api/1", "vmss-dev/1"}, set(), id="name-of-instance"),
        pytest.param({"names": ["vmss-flex"]}, FLEX, set(), id="name-of-flex-scale-set"),
        pytest.param({"tags": ["env=prod"], "resource_groups": ["rg-web"], "include_stopped": True},
                     WEB_PROD | {"vm-web-off"}, set(), id="include-stopped"),
        pytest.param({"tags": ["env=prod", "role=web"], "all_subscriptions": True},
                     WEB_PROD | {"vm-b-01", "vm-b-02", "vmss-b/0", "vmss-b/1"}, {"vm-web-off"}, id="all-subscriptions"),
        pytest.param({"subscriptions": [SUB_B], "select_all": True},
                     {"vm-b-01", "vm-b-02", "vm-b-dev", "vmss-b/0", "vmss-b/1"}, set(), id="other-subscription"),
        pytest.param({"subscriptions": [SUB_A, SUB_B], "tags": ["env=dev"]},
                     {"vmss-dev/0", "vmss-dev/1", "vm-b-dev"}, set(), id="two-subscriptions"),
    ],
)
async def test_selector_combinations(
    select: Callable[..., Any], options: dict[str, Any], selected: set[str], skipped: set[str]
) -> None:
    selection = await select(**options)
    assert names(selection.targets) == selected
    assert names(selection.skipped) == skipped
    assert [t.sort_key for t in selection.targets] == sorted(t.sort_key for t in selection.targets)


# ----------------------------------------------------------------------------- statusOnly is not the model
#: What real Azure's ``VirtualMachines_ListAll?statusOnly=true`` answers per VM (azure-recorded §1):
#: no tags, no storageProfile/osType, no identity, no virtualMachineScaleSet.
STATUS_ONLY_KEYS = {"id", "name", "type", "location"}
STATUS_ONLY_PROPERTIES = {"vmId", "provisioningState", "instanceView"}


def _stub(item: dict[str, Any], *, shout_group: bool = False) -> dict[str, Any]:
    """A statusOnly item as real Azure sends it (optionally with the resource-group segment
    upper-cased, as Flexible members come back)."""
    props = item.get("properties") or {}
    stub = {k: v for k, v in item.items() if k in STATUS_ONLY_KEYS}
    stub["properties"] = {k: v for k, v in props.items() if k in STATUS_ONLY_PROPERTIES}
    stub["properties"]["instanceView"] = {"statuses": (props.get("instanceView") or {}).get("statuses") or []}
    if shout_group:
        head, sep, tail = stub["id"].partition("/resourceGroups/")
        group, _, rest = tail.partition("/")
        stub["id"] = f"{head}{sep}{group.upper()}/{rest}"
    return stub


def stub_status_only(counter: list[int], *, shout_group: bool = False) -> Callable[[Listing], AsyncIterator[Any]]:
    """A page reader that reads through the real pipeline, then cuts statusOnly answers down to
    what real Azure sends; ``counter`` counts the items it cut."""

    async def pages(listing: Listing) -> AsyncIterator[list[dict[str, Any]]]:
        async for page in read_pages(listing):
            if listing.params.get("statusOnly") == "true":
                counter.append(len(page))
                page = [_stub(item, shout_group=shout_group) for item in page]
            yield page

    return pages


@pytest.mark.parametrize("shout_group", [False, True], ids=["stubs", "stubs-upper-cased-groups"])
@pytest.mark.parametrize(
    "options",
    [
        {"tags": ["env=prod"]},
        {"select_all": True, "include_stopped": True, "all_subscriptions": True},
        {"resource_groups": ["rg-web", "rg-win"], "os": "windows"},
        {"tags": ["role=worker"]},
        {"names": ["vm-untagged"]},
    ],
)
async def test_selection_never_reads_the_model_from_status_only(
    fleet_sim: Any, azure_env: Callable[[Any], Any], options: dict[str, Any], shout_group: bool
) -> None:
    """Real Azure's statusOnly items carry no tags, OS, identity or scale set: selecting with
    stubbed statusOnly answers selects exactly what selecting with the local Azure's full ones does."""
    from azrun.clients import ClientFactory

    azure_env(fleet_sim)
    factory = ClientFactory.from_env()
    cut: list[int] = []
    try:
        selector = Selector.from_options(**options)
        full = await resolve(selector, factory, default_subscriptions=[SUB_A], explain=True)
        stubbed = await resolve(selector, factory, default_subscriptions=[SUB_A], explain=True,
                                pages=stub_status_only(cut, shout_group=shout_group))
    finally:
        await factory.aclose()
    assert sum(cut) > 0  # the statusOnly listing was read, and cut down
    assert stubbed.targets == full.targets and stubbed.targets
    assert stubbed.skipped == full.skipped
    assert stubbed.not_selected == full.not_selected


async def test_targets_carry_kind_scope_power_os_and_identity(select: Callable[..., Any]) -> None:
    selection = await select(select_all=True, include_stopped=True, all_subscriptions=True)
    by_name = {t.name: t for t in selection.targets}
    assert len(by_name) == len(selection.targets) == 26 and not selection.skipped
    api4 = by_name["vmss-api/4"]
    assert (api4.kind, api4.scale_set, api4.instance_id, api4.power_state) == (
        TargetKind.VMSS_UNIFORM, "vmss-api", "4", "deallocated")
    assert api4.resource_id.endswith("/virtualMachineScaleSets/vmss-api/virtualMachines/4")
    assert api4.system_identity and api4.vm_name == "vmss-api_4" and api4.resource_group == "rg-scale"
    member = by_name[sorted(FLEX)[0]]
    assert (member.kind, member.scale_set) == (TargetKind.VMSS_FLEX, "vmss-flex")
    # as recorded, Azure adds VirtualMachineProfileTimeCreated to a Flexible member's tags
    assert {k: v for k, v in member.tag_dict().items() if k != "VirtualMachineProfileTimeCreated"} == {
        "env": "prod", "role": "batch", "team": "data"}
    assert "/virtualMachines/" in member.resource_id and "virtualMachineScaleSets" not in member.resource_id
    win = by_name["win-02"]
    assert (win.kind, win.os, win.power_state, win.subscription_id) == (TargetKind.VM, "windows", "stopped", SUB_A)
    ops = by_name["vm-untagged"]
    assert ops.system_identity and len(ops.user_identity_client_ids) == 1 and ops.tags == ()
    assert by_name["vm-b-dev"].subscription_id == SUB_B
    assert {t.location for t in selection.targets} == {"westeurope"}


async def test_stopped_machines_are_skipped_with_a_reason(select: Callable[..., Any]) -> None:
    selection = await select(tags=["env=prod"], resource_groups=["rg-web", "rg-win", "rg-scale"])
    reasons = {s.target.name: s.reason for s in selection.skipped}
    assert reasons == {
        "vm-web-off": "VM is deallocated (use --include-stopped to include it)",
        "win-02": "VM is stopped (use --include-stopped to include it)",
        "vmss-api/4": "instance is deallocated (use --include-stopped to include it)",
    }
    assert selection.counts()["power"] == {"deallocated": 2, "running": 12, "stopped": 1}
    assert selection.counts()["kind"] == {"vm": 7, "vmss-flex-member": 3, "vmss-uniform-instance": 5}


async def test_paging_is_followed_and_requests_stay_per_listing(select: Callable[..., Any], fleet_sim: Any) -> None:
    before = len(fleet_sim.requests())
    selection = await select(tags=["env=prod"])
    ops = [r["op"] for r in fleet_sim.requests()[before:] if r["service"] == "arm"]
    # page_size 3: 11 tagged resources plus the NIC, OS disk and public IP of each of the 9 tagged VMs
    # (tagged alike, as in Azure) -> 13 pages; 14 VMs -> 5 (model) + 5 (status); 4 scale sets -> 2;
    # 5 instances -> 2.
    assert ops.count("Resources_List") == 13
    assert ops.count("VirtualMachines_ListAll") == 5 + 5
    assert ops.count("VirtualMachineScaleSets_ListAll") == 2
    assert ops.count("VirtualMachineScaleSetVMs_List") == 2  # vmss-api only: vmss-dev is not tagged env=prod
    assert len(ops) == selection.arm_requests == 27
    assert "vmss-api/3" in names(selection.targets) and "vmss-api/4" in names(selection.skipped)


async def test_tag_only_on_a_flexible_scale_set_lists_its_members_not_every_vm(
    select: Callable[..., Any], fleet_sim: Any
) -> None:
    before = len(fleet_sim.requests())
    selection = await select(tags=["role=batch"])
    assert names(selection.targets) == FLEX and not selection.skipped
    ops = [r["op"] for r in fleet_sim.requests()[before:] if r["service"] == "arm"]
    assert "VirtualMachines_ListAll" not in ops
    assert ops.count("VirtualMachines_List") == 1  # $filter='virtualMachineScaleSet/id' eq ... (3 members)
    assert all(t.kind is TargetKind.VMSS_FLEX and t.power_state == "running" for t in selection.targets)


async def test_unknown_tag_is_an_empty_selection_after_one_request(select: Callable[..., Any]) -> None:
    selection = await select(tags=["env=nope"], all_subscriptions=True)
    assert selection.targets == selection.skipped == ()
    assert selection.subscriptions == (SUB_A, SUB_B)
    assert selection.arm_requests == 1 + 2  # the subscription list, then one tag query per subscription
    assert selection.no_match_message() == f"no machine matched --tag env=nope in subscription(s) {SUB_A}, {SUB_B}"
    with pytest.raises(NoTargetsMatched, match="no machine matched --tag env=nope"):
        selection.require_targets()


async def test_only_stopped_matches_refuse_to_run(select: Callable[..., Any]) -> None:
    selection = await select(names=["win-02"])
    assert names(selection.skipped) == {"win-02"}
    with pytest.raises(NoTargetsMatched, match="stopped or deallocated"):
        selection.require_targets()


async def test_explain_lists_every_machine_left_out(select: Callable[..., Any]) -> None:
    selection = await select(tags=["role=api"], resource_groups=["rg-scale"], explain=True)
    assert names(selection.targets) == API_RUNNING | {"vmss-dev/0", "vmss-dev/1"}
    assert {n.name: n.reason for n in selection.not_selected} == {
        m: "tag role=batch does not match --tag role=api" for m in FLEX
    }
    selection = await select(tags=["env=prod"], names=["vmss-*", "vm-web-0*"], resource_groups=["rg-scale", "rg-web"],
                             explain=True)
    reasons = {n.name: n.reason for n in selection.not_selected}
    assert reasons["vmss-dev/*"] == "scale set: tag env=dev does not match --tag env=prod"
    assert reasons["vm-web-05"] == "tag env=staging does not match --tag env=prod"
    assert reasons["vm-web-off"] == "name does not match --name vmss-* vm-web-0*"
    assert set(reasons) == {"vmss-dev/*", "vm-web-05", "vm-web-off"}


async def test_missing_subscription_is_one_line_naming_it(select: Callable[..., Any]) -> None:
    with pytest.raises(TargetError) as info:
        await select(subscriptions=[SUB_A, SUB_MISSING], select_all=True)
    assert SUB_MISSING in info.value.message and "\n" not in info.value.message
    assert "Reader" in (info.value.hint or "")


async def test_subscription_without_access_names_it_and_the_action(select: Callable[..., Any]) -> None:
    from azrun.sim.fleetspec import load_fleet

    identity = load_fleet(FLEET).identity(SUB_A, "id-limited")
    assert identity is not None
    with pytest.raises(PermissionDenied) as info:
        await select(subscriptions=[SUB_B], tags=["env=prod"], client_id=identity.client_id)
    assert SUB_B in info.value.message and "\n" not in info.value.message
    assert info.value.action == "Microsoft.Resources/subscriptions/resources/read"
    # the reader identity sees only subscription A when asked for every visible one
    selection = await select(all_subscriptions=True, tags=["env=dev"], client_id=identity.client_id)
    assert selection.subscriptions == (SUB_A,) and names(selection.targets) == {"vmss-dev/0", "vmss-dev/1"}


def test_no_default_subscription_is_a_config_error(fleet_sim: Any, azure_env: Callable[[Any], Any]) -> None:
    import asyncio

    from azrun.clients import ClientFactory

    azure_env(fleet_sim)

    async def go() -> None:
        factory = ClientFactory.from_env()
        try:
            await resolve(Selector.from_options(select_all=True), factory)
        finally:
            await factory.aclose()

    with pytest.raises(ConfigError, match="no subscription"):
        asyncio.run(go())


def test_fleet_text_is_valid_toml(tmp_path: Path) -> None:
    from azrun.sim.fleetspec import load_fleet

    fleet = load_fleet(FLEET)
    assert {s.id for s in fleet.subscriptions} == {SUB_A, SUB_B}
