"""azrun.targets._selector: tag filters, the selector, rejection reasons (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from azrun.errors import ConfigError
from azrun.models import Target, TargetKind
from azrun.targets import (
    Selector,
    TagFilter,
    parse_tags,
)

SUB_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
SUB_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
SUB_MISSING = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"


@pytest.mark.parametrize(
    ("text", "key", "values"),
    [
        ("env=prod", "env", frozenset({"prod"})),
        ("env=prod,staging", "env", frozenset({"prod", "staging"})),
        (" env = prod , staging ", "env", frozenset({"prod", "staging"})),
        ("env", "env", None),
        ("env=", "env", frozenset({""})),
        ("k=a=b", "k", frozenset({"a=b"})),
    ],
)
def test_tag_filter_parse(text: str, key: str, values: frozenset[str] | None) -> None:
    f = TagFilter.parse(text)
    assert (f.key, f.values) == (key, values)


@pytest.mark.parametrize("text", ["=x", "=", " =prod", "env=a,,b", "env=a,"])
def test_tag_filter_bad_syntax_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        TagFilter.parse(text, flag="--exclude-tag")
    assert "--exclude-tag" in info.value.message and info.value.hint


def test_tag_filter_matching_is_case_insensitive_for_names_only() -> None:
    f = TagFilter.parse("Env=Prod")
    assert f.matches({"env": "Prod"}) and f.matches({"ENV": "Prod"})
    assert not f.matches({"env": "prod"})
    assert f.mismatch({"role": "web"}) == "has no tag 'Env' (--tag Env=Prod)"
    assert f.mismatch({"env": "dev"}) == "tag env=dev does not match --tag Env=Prod"
    assert TagFilter("env").matches({"ENV": ""})


def test_odata_filters_narrow_server_side_and_escape_quotes() -> None:
    assert TagFilter.parse("env=prod").odata() == "tagName eq 'env' and tagValue eq 'prod'"
    assert TagFilter.parse("env=a,b").odata() == "tagName eq 'env'"
    assert TagFilter.parse("o'k=it's").odata() == "tagName eq 'o''k' and tagValue eq 'it''s'"


def test_repeated_keys_accumulate_values() -> None:
    tags = parse_tags(["env=prod", "role=web", "ENV=staging"])
    assert [str(t) for t in tags] == ["env=prod,staging", "role=web"]
    assert [str(t) for t in parse_tags(["env=prod", "env"])] == ["env"]


def test_selector_requires_a_narrowing_option_or_all() -> None:
    with pytest.raises(ConfigError) as info:
        Selector.from_options(os="linux", include_stopped=True)
    assert info.value.hint == "add --tag/--name/-g, or --all to target every machine in scope"
    assert Selector.from_options(select_all=True).is_empty
    assert not Selector.from_options(resource_groups=["rg"]).is_empty


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"os": "bsd", "select_all": True}, "--os 'bsd'"),
        ({"subscriptions": ["prod"], "select_all": True}, "--subscription 'prod'"),
        ({"subscriptions": [SUB_A], "all_subscriptions": True, "select_all": True}, "exclude each other"),
        ({"names": [" "]}, "--name needs a value"),
        ({"tags": ["=x"]}, "--tag '=x'"),
    ],
)
def test_selector_option_errors(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Selector.from_options(**kwargs)
    assert needle in info.value.message and info.value.hint


def test_selector_normalises_and_describes() -> None:
    sel = Selector.from_options(
        tags=["env=prod"], exclude_tags=["role=db"], subscriptions=[SUB_A.upper(), SUB_A], resource_groups=["rg-a"],
        names=["vm-*"], os="Linux",
    )
    assert sel.subscriptions == (SUB_A,) and sel.os == "linux"
    assert sel.describe() == "--tag env=prod --exclude-tag role=db -g rg-a --name 'vm-*' --os linux"


def _target(name: str, **kw: Any) -> Target:
    base: dict[str, Any] = {
        "resource_id": f"/subscriptions/{SUB_A}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        "name": name, "kind": TargetKind.VM, "subscription_id": SUB_A, "resource_group": "rg",
        "location": "westeurope", "os": "linux", "power_state": "running", "vm_name": name,
    }
    return Target(**{**base, **kw})


def test_rejection_reasons() -> None:
    sel = Selector.from_options(tags=["env=prod"], exclude_tags=["role=db"], names=["vm-*", "vmss-api"], os="linux")
    ok = _target("vm-1", tags=(("env", "prod"),))
    assert sel.rejection(ok) is None
    assert sel.rejection(_target("db-1", tags=(("env", "prod"),))) == "name does not match --name vm-* vmss-api"
    assert sel.rejection(_target("vm-2", os="windows", tags=(("env", "prod"),))) == "OS is windows, not linux"
    assert sel.rejection(_target("vm-3")) == "has no tag 'env' (--tag env=prod)"
    excluded = _target("vm-4", tags=(("env", "prod"), ("role", "db")))
    assert sel.rejection(excluded) == "excluded by --exclude-tag role=db"
    instance = _target("vmss-api/3", kind=TargetKind.VMSS_UNIFORM, scale_set="vmss-api", instance_id="3",
                       vm_name="vmss-api_3", tags=(("env", "prod"),))
    assert sel.rejection(instance) is None  # by its scale set's name


@pytest.mark.parametrize(
    ("pattern", "scale_set", "could"),
    [
        ("vmss-api", "vmss-api", True),
        ("vmss-api/2", "vmss-api", True),
        ("vmss-api_2", "vmss-api", True),
        ("VMSS-*", "vmss-api", True),
        ("*3", "vmss-api", True),
        ("vmss-apix*", "vmss-api", False),
        ("vm-web-*", "vmss-api", False),
        ("vmss-api2", "vmss-api", False),
    ],
)
def test_scale_set_name_prefilter(pattern: str, scale_set: str, could: bool) -> None:
    sel = Selector.from_options(names=[pattern])
    assert (sel.scale_set_rejection(scale_set, "linux", {}) is None) is could
