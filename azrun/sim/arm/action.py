"""The legacy run-command *action* API and the per-location command catalogue.

``POST .../virtualMachines/{vm}/runCommand`` (and the scale-set VM twin) runs one script at a
time per VM (a second one while the first runs: ``409 Conflict``), answers ``202`` with
``Azure-AsyncOperation`` and ``Location``, and its result (``ComponentStatus/StdOut`` and
``StdErr``, last 4 KB each) comes from the ``Location`` URL once done. On Linux a nonzero exit
fails the operation (``VMExtensionProvisioningError`` with the output), as RunCommandLinux does.
``GET .../locations/{loc}/runCommands[/{commandId}]`` lists the built-in commands.
"""

from __future__ import annotations

from typing import Any

from azrun.sim.arm import errors as err
from azrun.sim.arm import policies as pol
from azrun.sim.arm.context import Call, Reply, Service, listing
from azrun.sim.arm.runcmd import json_body, operation_headers, params_of
from azrun.sim.model import Machine

_SCHEMA = "http://schema.management.azure.com/schemas/2016-11-17/runcommands.json"
_SCRIPT_PARAMETERS: list[dict[str, Any]] = []
# id -> (osType, label, description, script)
CATALOG: dict[str, tuple[str, str, str, list[str]]] = {
    "RunShellScript": (
        "Linux",
        "Executes a Linux shell script",
        "Custom multiline shell script should be defined in script property. Optional parameters can be set "
        "in parameters property.",
        [],
    ),
    "ifconfig": (
        "Linux",
        "List network configuration",
        "Get the configuration of all network interfaces.",
        ["ip address show 2>/dev/null || ifconfig"],
    ),
    "RunPowerShellScript": (
        "Windows",
        "Executes a PowerShell script",
        "Custom multiline PowerShell script should be defined in script property. Optional parameters can be "
        "set in parameters property.",
        [],
    ),
    "IPConfig": (
        "Windows",
        "List IP configuration",
        "Shows detailed information for the IP address, subnet mask and default gateway for each adapter "
        "bound to TCP/IP.",
        ["Get-NetIPConfiguration"],
    ),
}


def _document(command_id: str, *, full: bool) -> dict[str, Any]:
    os_type, label, description, script = CATALOG[command_id]
    doc: dict[str, Any] = {
        "$schema": _SCHEMA,
        "id": command_id,
        "osType": os_type,
        "label": label,
        "description": description,
    }
    if full:
        doc["script"] = script
        doc["parameters"] = _SCRIPT_PARAMETERS
    return doc


def _catalog_id(command_id: str) -> str | None:
    return next((k for k in CATALOG if k.lower() == command_id.lower()), None)


async def list_commands(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    svc.subscription(p["sub"])
    svc.compute(call, pol.CATALOG, subscription=p["sub"], resource=None)
    return Reply(200, listing([_document(k, full=False) for k in CATALOG], None))


async def get_command(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    svc.subscription(p["sub"])
    svc.compute(call, pol.CATALOG, subscription=p["sub"], resource=None)
    found = _catalog_id(p["command"])
    if found is None:
        raise err.entity_not_found()
    return Reply(200, _document(found, full=True))


def _parse(raw: bytes, m: Machine) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """(script, command_id, parameters) for the agent from a ``RunCommandInput`` body."""
    body = json_body(raw)
    command_id = body.get("commandId")
    if command_id is None:
        raise err.invalid_parameter("Required parameter 'commandId' is missing (null).", "commandId")
    if not isinstance(command_id, str):
        raise err.invalid_request_content("Error converting value to type 'System.String'. Path 'commandId'.")
    found = _catalog_id(command_id)
    os_type = "Windows" if m.os == "windows" else "Linux"
    if found is None or CATALOG[found][0] != os_type:
        raise err.invalid_parameter(
            f"The run command '{command_id}' is not supported for the {os_type} virtual machine '{m.name}'.",
            "commandId",
        )
    lines = body.get("script") or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise err.invalid_request_content("Error converting value to type 'System.String[]'. Path 'script'.")
    script = (
        "\n".join(lines)
        if found in ("RunShellScript", "RunPowerShellScript")
        else "\n".join(CATALOG[found][3])
    )
    parameters = [(x["name"], x["value"]) for x in params_of(body.get("parameters"), "parameters")]
    return script, None, parameters


async def run_action(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    if "instance" in p:
        m = svc.instance(p["sub"], p["rg"], p["vmss"], p["instance"])
        policy = pol.VMSS_VM_ACTION
    else:
        m = svc.vm(p["sub"], p["rg"], p["vm"])
        policy = pol.VM_UPDATE
    svc.compute(call, policy, subscription=m.subscription_id, resource=m.id.lower())
    script, command_id, parameters = _parse(call.body, m)
    if m.power != "running":
        raise err.vm_not_running()
    if svc.world.runs.action_busy(m):
        raise err.conflict_in_progress()
    op = svc.world.runs.run_action(m, script=script, command_id=command_id, parameters=parameters)
    return Reply(202, None, operation_headers(call, op, location=True))
