"""Replay of real Azure CLI recordings against the local Azure (issue 13, conformance).

For each vendored recording (``tests/fixtures/recordings/*.json``, see its PROVENANCE.md) a
local Azure is started whose world mirrors the recording's (subscription, resource groups, VMs,
scale sets and their instances, location, rate-limit header format), then every recorded
request is sent in order and the answer compared with the recorded one:

- the status code;
- the names of the headers that carry the protocol (``Azure-AsyncOperation``, ``Location``,
  ``Azure-AsyncNotification``, ``x-ms-ratelimit-remaining-resource``, ``x-ms-request-charge``)
  and, in the rate-limit header, the policy names in order;
- the JSON key structure of the body (values ignored; lists compared element-wise by shape).

Operation URLs are mapped from the recorded request that created them to the local one; before
an operation GET the replay waits (bounded) until the local operation shows the recorded status,
as the recorder's client waited 30 s between polls. Scripts of the legacy action are replaced by
``echo replayed`` (the recordings install nginx with sudo). Differences that are explained are
listed in ``ALLOWED`` with the reason; everything else is a failure.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from arm_support import Raw

from azrun.sim.launcher import SimProcess

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "recordings"
SUB = "00000000-0000-0000-0000-000000000000"
API = "2024-11-01"
COMPARED_HEADERS = (
    "azure-asyncoperation",
    "location",
    "azure-asyncnotification",
    "x-ms-ratelimit-remaining-resource",
    "x-ms-request-charge",
)
_RG = re.compile(r"/resourceGroups/([^/]+)", re.IGNORECASE)
_VM = re.compile(r"/providers/Microsoft\.Compute/virtualMachines/([^/]+)", re.IGNORECASE)
_SS = re.compile(r"/virtualMachineScaleSets/([^/]+)(?:/virtualMachines/([^/]+))?", re.IGNORECASE)
_OP = re.compile(r"/operations/([^/?]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Allowed:
    """An explained difference: recordings (glob), the difference (glob), why."""

    recording: str
    difference: str
    reason: str


#: Differences between recorded Azure and the local Azure that are explained (and why). Globs
#: over the recording's name and the difference's text; each is one reason.
_OLD = "*@202[02]-*"  # recorded with 2020-22 API versions and images
ALLOWED: tuple[Allowed, ...] = (
    # -- the recordings are older than the 2024-11-01 surface the local Azure serves
    Allowed(_OLD, "header extra: azure-asyncnotification",
            "2020 answers lacked Azure-AsyncNotification; 2022+ recordings carry it on every run-command write"),
    Allowed(_OLD, "body extra: *timeCreated", "timeCreated was added to VM models after these recordings"),
    Allowed(_OLD, "body extra: *hardwareProfile.vmSize", "2020 scale-set VMs answered no hardwareProfile"),
    Allowed(_OLD, "body extra: *osDisk.deleteOption", "disk deleteOption came with later API versions"),
    Allowed(_OLD, "body extra: *linuxConfiguration.patchSettings*", "patchSettings came with later API versions"),
    Allowed("*@2020-*", "body missing: *linuxConfiguration.patchSettings",
            "2020 scale-set VMs echoed patchSettings; the 2022-23 recordings' do not (the local Azure follows those)"),
    Allowed(_OLD, "body extra: *linuxConfiguration.enableVMAgentPlatformUpdates",
            "enableVMAgentPlatformUpdates came with later API versions"),
    # -- the recorded machines were created otherwise than the local fleet's
    Allowed("*", "body extra: *networkProfile.networkInterfaces.properties",
            "the local NICs carry primary/deleteOption; the CLI tests' VMs were created without NIC options"),
    Allowed("*", "body extra: *linuxConfiguration.ssh",
            "the local Linux VMs use SSH keys; the recorded VMs used password authentication"),
    Allowed("*", "body extra: *imageReference.exactVersion", "the recorded scale sets' image had no exact version"),
    Allowed("test_vm_show_list_sizes*", "body missing: *zones", "the recorded VM was zonal; the local fleet is not"),
    Allowed("test_run_command_v2@2023*", "body extra: properties.instanceView.*",
            "the recorded VM's agent had not reported computerName/osName/osVersion/handlers yet (a fresh VM); "
            "the local agent always has"),
    # -- model details the local Azure does not render (azrun reads none of them)
    Allowed("*", "body missing: *networkProfileConfiguration",
            "scale-set VM network configuration is not modelled (azrun reads no network settings)"),
    Allowed("*", "body missing: properties.virtualMachineProfile.networkProfile",
            "scale-set network profile is not modelled"),
    Allowed("*", "body missing: properties.virtualMachineProfile.timeCreated", "not modelled"),
    Allowed("*", "body missing: properties.doNotRunExtensionsOnOverprovisionedVMs", "not modelled"),
    Allowed("*", "body missing: properties.upgradePolicy.rollingUpgradePolicy", "not modelled"),
    Allowed("*", "body missing: properties.constrainedMaximumCapacity", "Flexible scale sets: not modelled"),
    Allowed("*", "body missing: properties.singlePlacementGroup",
            "Flexible scale sets: the local ones have no VM profile (members are modelled as VMs)"),
    Allowed("*", "body missing: properties.upgradePolicy", "Flexible scale sets: as above"),
    Allowed("*", "body missing: properties.virtualMachineProfile", "Flexible scale sets: as above"),
    # -- state the recording changed with requests outside the local Azure's scope (skipped)
    Allowed("test_vmss_vms@*", "body extra: [cov]*",
            "the recorded instances had been deallocated by a scale-set POST the replay skips; deallocated "
            "instances report no computer name, OS or agent"),
    Allowed("test_vmss_vms@*", "body extra: vmAgent", "as above"),
    Allowed("test_vmss_vms@*", "header extra: x-ms-request-charge",
            "the recording had deleted the instances (skipped POST): an empty listing is charged nothing; "
            "the local scale set still has its instances"),
    Allowed("test_vmss_vms@*", "rate-limit policies: *VMScaleSetVMViews*", "as above: no instances, no VMViews charge"),
)


@dataclass
class Outcome:
    """One replayed interaction: where from, and its differences (with the explained ones)."""

    recording: str
    index: int
    what: str
    differences: list[str] = field(default_factory=list)
    explained: list[tuple[str, str]] = field(default_factory=list)

    @property
    def conforming(self) -> bool:
        return not self.differences and not self.explained


@dataclass
class Summary:
    outcomes: list[Outcome]
    skipped: int

    @property
    def replayed(self) -> int:
        return len(self.outcomes)

    @property
    def conforming(self) -> int:
        return sum(o.conforming for o in self.outcomes)

    @property
    def explained(self) -> int:
        return sum(1 for o in self.outcomes if o.explained and not o.differences)

    def unexplained(self) -> list[str]:
        return [f"{o.recording}#{o.index} {o.what}: {d}" for o in self.outcomes for d in o.differences]

    def line(self) -> str:
        return (
            f"{self.replayed} recorded interactions replayed / {self.conforming} conforming "
            f"({self.explained} with explained differences, {len(self.unexplained())} unexplained; "
            f"{self.skipped} recorded operation polls of requests outside the local Azure skipped)"
        )


def recordings() -> list[Path]:
    return sorted(RECORDINGS.glob("*.json"))


# ------------------------------------------------------------------------------ the world
def fleet_of(doc: dict[str, Any]) -> str:
    """A fleet TOML mirroring the recording's world."""
    groups: dict[str, dict[str, Any]] = {}
    legacy = False
    for it in doc["interactions"]:
        path = it["path"]
        header = it["headers"].get("x-ms-ratelimit-remaining-resource", "")
        legacy = legacy or bool(re.search(r"\d+Min;", header) and "GetSubscriptionInfo" not in header)
        if not (m := _RG.search(path)):
            continue
        group = groups.setdefault(m[1].lower(), {"name": m[1], "vms": set(), "sets": {}})
        if ss := _SS.search(path):
            entry = group["sets"].setdefault(ss[1], {"instances": 2, "flexible": False})
            if ss[2] is not None and ss[2].isdigit():
                entry["instances"] = max(entry["instances"], int(ss[2]) + 1)
            body = it.get("body") or {}
            if isinstance(body, dict) and body.get("properties", {}).get("orchestrationMode") == "Flexible":
                entry["flexible"] = True
        elif vm := _VM.search(path):
            group["vms"].add(vm[1])
        flt = it["query"].get("$filter", "")
        if "virtualMachineScaleSet/id" in flt:
            name = flt.rstrip("'").rsplit("/", 1)[-1]
            group["sets"].setdefault(name, {"instances": 2, "flexible": True})["flexible"] = True
    lines = [
        "[sim]",
        "agent_start_delay_s = 0.6",  # the first operation poll, right after the PUT, sees InProgress
        "agent_status_interval_s = 0.2",
        "delete_duration_s = 0.6",
        "page_size = 100",
        "[limits]",
        f'header_format = "{"legacy" if legacy else "current"}"',
        "[[subscription]]",
        f'id = "{SUB}"',
        'name = "replay"',
    ]
    for group in groups.values():
        lines += ["  [[subscription.resource_group]]", f'  name = "{group["name"]}"', '  location = "westus"']
        for vm in sorted(group["vms"]):
            lines += ["    [[subscription.resource_group.vm]]", f'    name = "{vm}"']
        for name, ss in sorted(group["sets"].items()):
            lines += ["    [[subscription.resource_group.vmss]]", f'    name = "{name}"',
                      f'    orchestration = "{"Flexible" if ss["flexible"] else "Uniform"}"',
                      f'    instances = {ss["instances"]}']
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ comparing
def shape(value: Any) -> Any:
    """The key structure of a JSON value: dicts by key, lists merged over their elements."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        scalar = False
        for item in value:
            s = shape(item)
            if isinstance(s, dict):
                merged = _merge(merged, s)
            else:
                scalar = True
        return [merged] if merged else ([None] if scalar else [])
    return None


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else out.get(k, v)
    return out


def shape_diff(recorded: Any, local: Any, path: str = "") -> Iterator[str]:
    if isinstance(recorded, dict) and isinstance(local, dict):
        for key in recorded.keys() - local.keys():
            yield f"body missing: {path}{key}"
        for key in local.keys() - recorded.keys():
            yield f"body extra: {path}{key}"
        for key in recorded.keys() & local.keys():
            yield from shape_diff(recorded[key], local[key], f"{path}{key}.")
    elif isinstance(recorded, list) and isinstance(local, list):
        if recorded and local:
            yield from shape_diff(recorded[0], local[0], path)
    elif (recorded is None) != (local is None) and not (recorded == [] or local == []):
        kind = lambda v: type(v).__name__  # noqa: E731
        yield f"body type: {path.rstrip('.') or '(root)'} {kind(recorded)} != {kind(local)}"


def policies(header: str) -> list[str]:
    return [part.strip().rpartition(";")[0] for part in header.split(",") if part.strip()]


def compare(it: dict[str, Any], resp: requests.Response) -> list[str]:
    diffs: list[str] = []
    if resp.status_code != it["status"]:
        diffs.append(f"status: {resp.status_code} != {it['status']}")
    local = {k.lower(): v for k, v in resp.headers.items()}
    for name in COMPARED_HEADERS:
        if name in it["headers"] and name not in local:
            diffs.append(f"header missing: {name}")
        elif name not in it["headers"] and name in local:
            diffs.append(f"header extra: {name}")
    rec_rl, loc_rl = it["headers"].get("x-ms-ratelimit-remaining-resource"), local.get("x-ms-ratelimit-remaining-resource")
    if rec_rl and loc_rl and policies(rec_rl) != policies(loc_rl):
        diffs.append(f"rate-limit policies: {policies(loc_rl)} != {policies(rec_rl)}")
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = {"_text": resp.text[:200]}
    diffs.extend(shape_diff(shape(it["body"]), shape(body)))
    return diffs


def explain(recording: str, diffs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    left: list[str] = []
    explained: list[tuple[str, str]] = []
    for d in diffs:
        rule = next((a for a in ALLOWED if fnmatch.fnmatch(recording, a.recording)
                     and fnmatch.fnmatch(d, a.difference)), None)
        if rule is None:
            left.append(d)
        else:
            explained.append((d, rule.reason))
    return left, explained


# ------------------------------------------------------------------------------ replaying
def _request_body(it: dict[str, Any]) -> Any:
    body = it["requestBody"]
    if it["method"] == "POST" and isinstance(body, dict) and "script" in body:
        body = {**body, "script": ["echo replayed"]}  # never run the recorded sudo apt-get
    return body


def replay(path: Path, workdir: Path) -> tuple[list[Outcome], int]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    name = path.stem
    sim = SimProcess(fleet_of(doc), workdir=workdir, storage=False)
    outcomes: list[Outcome] = []
    skipped = 0
    with sim:
        raw = Raw(sim)
        ops: dict[str, tuple[str, str | None]] = {}  # recorded op id -> (local async URL, local monitor URL)
        for it in doc["interactions"]:
            what = f"{it['method']} {it['path'].split('/providers/')[-1]}"
            if (op := _OP.search(it["path"])) is not None:
                local = ops.get(op[1].lower())
                if local is None:
                    skipped += 1
                    continue
                monitor = it["query"].get("monitor") == "true"
                url = (local[1] or local[0].replace("?", "?monitor=true&", 1)) if monitor else local[0]
                resp = _poll_until(raw, url, it, monitor)
            else:
                query = {k: v for k, v in it["query"].items() if k != "api-version"}
                resp = raw(it["method"], it["path"], api_version=API, params=query, body=_request_body(it))
                for key, local_key in (("azure-asyncoperation", 0), ("location", 1)):
                    rec_url, loc_url = it["headers"].get(key), resp.headers.get(key)
                    if rec_url and (m := _OP.search(rec_url)):
                        entry = ops.setdefault(m[1].lower(), ("", None))
                        if loc_url:
                            ops[m[1].lower()] = (loc_url, entry[1]) if local_key == 0 else (entry[0], loc_url)
            left, explained = explain(name, compare(it, resp))
            outcomes.append(Outcome(name, it["index"], what, left, explained))
    return outcomes, skipped


def _poll_until(raw: Raw, url: str, it: dict[str, Any], monitor: bool, timeout_s: float = 15) -> requests.Response:
    """GET the local operation until it shows what was recorded (or the time is up)."""
    want_status = (it.get("body") or {}).get("status") if isinstance(it.get("body"), dict) else None
    deadline = time.monotonic() + timeout_s
    while True:
        resp = raw("GET", url, api_version=None)
        if monitor:
            if resp.status_code == it["status"] or resp.status_code != 202:
                return resp
        elif want_status is None or (resp.ok and resp.json().get("status") == want_status):
            return resp
        if time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def replay_all(workdir: Path) -> Summary:
    outcomes: list[Outcome] = []
    skipped = 0
    for path in recordings():
        got, skip = replay(path, workdir / path.stem.replace("@", "-"))
        outcomes += got
        skipped += skip
    return Summary(outcomes, skipped)


def unused_rules(summary: Summary) -> list[Allowed]:
    """Allow-list entries no difference needed (the list must stay honest)."""
    reasons = {r for o in summary.outcomes for _, r in o.explained}
    used = {a for a in ALLOWED if a.reason in reasons}
    return [a for a in ALLOWED if a not in used and a.reason != "as above" and not _shares_reason(a, used)]


def _shares_reason(rule: Allowed, used: set[Allowed]) -> bool:
    return any(u.reason == rule.reason for u in used)
