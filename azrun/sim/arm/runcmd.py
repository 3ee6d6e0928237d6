"""Managed run commands over ARM: body validation, PUT/PATCH/GET/LIST/DELETE, async operations.

Works for VMs (``virtualMachines/{vm}/runCommands``) and Uniform scale-set instances
(``virtualMachineScaleSets/{ss}/virtualMachines/{id}/runCommands``) alike; the machine is the
only difference. Semantics chosen where Azure is undocumented are listed in ``state.py``.
Validation messages name fields and types only, never values (values may be secrets).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from azrun.sim import render_runs as rr
from azrun.sim.arm import errors as err
from azrun.sim.arm import policies as pol
from azrun.sim.arm.context import Call, Reply, Service, listing, page
from azrun.sim.arm.runs import RUN_COMMAND_CAP
from azrun.sim.model import Machine, Operation, RunCommand

_SOURCES = ("script", "scriptUri", "commandId", "galleryScriptReferenceId")
_BOOLS = ("asyncExecution", "treatFailureAsDeploymentFailure")
_STRINGS = ("runAsUser", "runAsPassword", "outputBlobUri", "errorBlobUri")
_IDENTITIES = ("outputBlobManagedIdentity", "errorBlobManagedIdentity")


def normalize_location(location: str) -> str:
    """ "West US" -> "westus", as ARM echoes it."""
    return location.replace(" ", "").lower()


# ---------------------------------------------------------------------------- validation
def json_body(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except UnicodeDecodeError as exc:
        raise err.invalid_request_content("The request body is not valid UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise err.invalid_request_content(
            f"Unexpected character encountered while parsing value. Path '', line {exc.lineno}, position {exc.colno}."
        ) from exc
    except RecursionError:
        raise err.invalid_request_content("The JSON nesting is too deep.") from None
    if not isinstance(obj, dict):
        raise err.invalid_request_content("The request content must be a JSON object. Path ''.")
    return obj


def _type_error(path: str, kind: str) -> err.ArmError:
    return err.invalid_request_content(f"Error converting value to type '{kind}'. Path '{path}'.")


def params_of(value: Any, path: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type_error(path, "System.Collections.Generic.List`1[RunCommandInputParameter]")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _type_error(f"{path}[{i}]", "RunCommandInputParameter")
        entry = {}
        for key in ("name", "value"):
            v = item.get(key)
            if v is None:
                raise err.invalid_parameter(
                    f"Required parameter '{path}[{i}].{key}' is missing (null).", f"{path}[{i}].{key}"
                )
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise _type_error(f"{path}[{i}].{key}", "System.String")
            entry[key] = str(v)
        out.append(entry)
    return out


def _source(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error("properties.source", "VirtualMachineRunCommandScriptSource")
    src: dict[str, Any] = {}
    for key, v in value.items():
        if key == "scriptUriManagedIdentity":
            src[key] = _identity(v, "properties.source.scriptUriManagedIdentity")
        elif v is not None:
            if not isinstance(v, str):
                raise _type_error(f"properties.source.{key}", "System.String")
            src[key] = v
    return src


def _identity(value: Any, path: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or any(not isinstance(v, str) for v in value.values() if v is not None):
        raise _type_error(path, "RunCommandManagedIdentity")
    ident = {k: v for k, v in value.items() if k in ("clientId", "objectId") and v}
    if len(ident) > 1:
        raise err.invalid_parameter(f"Only one of clientId or objectId may be specified in '{path}'.", path)
    return ident


def validate_properties(props: Any, *, partial: bool = False) -> dict[str, Any]:
    """The run command properties as stored (secrets included), defaults filled unless partial."""
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise _type_error("properties", "VirtualMachineRunCommandProperties")
    out: dict[str, Any] = {}
    if props.get("source") is not None:
        out["source"] = _source(props["source"])
    for key in ("parameters", "protectedParameters"):
        if key in props:
            out[key] = params_of(props[key], f"properties.{key}")
    for key in _BOOLS:
        if props.get(key) is not None:
            if not isinstance(props[key], bool):
                raise _type_error(f"properties.{key}", "System.Boolean")
            out[key] = props[key]
    for key in _STRINGS:
        if props.get(key) is not None:
            if not isinstance(props[key], str):
                raise _type_error(f"properties.{key}", "System.String")
            out[key] = props[key]
    for key in _IDENTITIES:
        if key in props and (ident := _identity(props[key], f"properties.{key}")) is not None:
            out[key] = ident
    if props.get("timeoutInSeconds") is not None:
        t = props["timeoutInSeconds"]
        if isinstance(t, bool) or not isinstance(t, int):
            raise _type_error("properties.timeoutInSeconds", "System.Int32")
        if t < 0:
            raise err.invalid_parameter(
                "The value of parameter timeoutInSeconds is invalid.", "properties.timeoutInSeconds"
            )
        out["timeoutInSeconds"] = t
    if not partial:
        _fill_and_check(out)
    return out


def _fill_and_check(s: dict[str, Any]) -> None:
    # As recorded: asyncExecution and timeoutInSeconds are always echoed (false / 0);
    # treatFailureAsDeploymentFailure only when it was sent.
    s.setdefault("asyncExecution", False)
    s.setdefault("timeoutInSeconds", 0)
    source = s.get("source") or {}
    given = [k for k in _SOURCES if source.get(k)]
    # None at all is accepted, as recorded: the handler then fails the execution (exit -202).
    if len(given) > 1:
        raise err.invalid_parameter(
            "Exactly one of script, scriptUri, commandId or galleryScriptReferenceId must be specified "
            "in the run command source.",
            "properties.source",
        )
    for key in ("outputBlobUri", "errorBlobUri"):
        if s.get(key):
            parts = urlsplit(s[key])
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise err.invalid_parameter(
                    f"The value of parameter {key} is not a valid URI.", f"properties.{key}"
                )


def parse_put(raw: bytes) -> tuple[str, dict[str, str] | None, dict[str, Any]]:
    """(location, tags or None, settings) of a PUT body."""
    body = json_body(raw)
    location = body.get("location")
    if location is None or location == "":
        raise err.ArmError(400, "LocationRequired", "The location property is required for this definition.")
    if not isinstance(location, str):
        raise _type_error("location", "System.String")
    return (
        normalize_location(location),
        _parse_tags(body.get("tags")),
        validate_properties(body.get("properties")),
    )


def _parse_tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _type_error("tags", "System.Collections.Generic.Dictionary`2[System.String,System.String]")
    return dict(value)


# ---------------------------------------------------------------------------- handlers
def _machine(svc: Service, p: dict[str, str]) -> Machine:
    if "instance" in p:
        return svc.instance(p["sub"], p["rg"], p["vmss"], p["instance"])
    return svc.vm(p["sub"], p["rg"], p["vm"])


def _policy(m: Machine, verb: str) -> str:
    """The metered operation of a run-command request ("write", "delete" or "read")."""
    if m.uniform:
        return {"write": pol.VMSS_VM_UPDATE, "delete": pol.VMSS_VM_DELETE}.get(verb, pol.VMSS_VM_GET)
    return pol.VM_GET if verb == "read" else pol.VM_UPDATE


def operation_headers(call: Call, op: Operation, *, location: bool) -> dict[str, str]:
    """As recorded: ``Azure-AsyncNotification: Enabled`` and ``Azure-AsyncOperation`` always,
    ``Location`` (monitor) on DELETE and POST only, and never ``Retry-After``."""
    m = op.machine
    url = (
        f"{call.base}/subscriptions/{m.subscription_id}/providers/Microsoft.Compute/locations/"
        f"{normalize_location(m.location)}/operations/{op.id}"
    )
    headers = {
        "Azure-AsyncNotification": "Enabled",
        "Azure-AsyncOperation": f"{url}?p={_P}&api-version={call.api_version}",
    }
    if location:
        headers["Location"] = f"{url}?p={_P}&monitor=true&api-version={call.api_version}"
    return headers


_P = "571046f6-b640-41c1-86f7-f9f044b5adf9"  # the platform's ``p=`` operation parameter (as recorded)


def _not_found(m: Machine, name: str) -> err.ArmError:
    if m.uniform:
        return err.entity_not_found()
    return err.resource_not_found(
        "Microsoft.Compute/virtualMachines", f"{m.name}/runCommands/{name}", m.resource_group
    )


def _check_location(m: Machine, location: str) -> None:
    if location != normalize_location(m.location):
        raise err.invalid_parameter(
            f"The run command location '{location}' must be the same as the location "
            f"'{normalize_location(m.location)}' of the virtual machine '{m.name}'.",
            "location",
        )


async def put_run_command(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = _machine(svc, p)
    svc.compute(call, _policy(m, "write"), subscription=m.subscription_id, resource=m.id.lower())
    world = svc.world
    if world.extension_busy(m) or (
        world.faults.arm_conflict_rate and world.rng.random() < world.faults.arm_conflict_rate
    ):
        raise err.conflict_in_progress()
    location, tags, settings = parse_put(call.body)
    _check_location(m, location)
    why = world.runs.conflict(m, p["rc"], location, settings)
    if why == "not-running":
        raise err.vm_not_running()
    if why == "cap":
        raise err.too_many_run_commands(m.name, RUN_COMMAND_CAP)
    if why == "in-progress":
        raise err.conflict_in_progress()
    rc, created, op = await world.runs.put(m, p["rc"], location, tags, settings)
    return Reply(201 if created else 200, rr.run_command(rc), operation_headers(call, op, location=False))


async def patch_run_command(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = _machine(svc, p)
    svc.compute(call, _policy(m, "write"), subscription=m.subscription_id, resource=m.id.lower())
    body = json_body(call.body)
    tags = _parse_tags(body.get("tags"))
    changes = validate_properties(body.get("properties"), partial=True)
    existing = m.run_commands.get(p["rc"].lower())
    if existing is None:
        raise _not_found(m, p["rc"])
    settings = {**existing.settings, **changes}
    _fill_and_check(settings)
    why = svc.world.runs.conflict(m, existing.name, existing.location, settings)
    if why == "not-running":
        raise err.vm_not_running()
    if why == "in-progress":
        raise err.conflict_in_progress()
    rc, _, op = await svc.world.runs.put(m, existing.name, existing.location, tags, settings)
    return Reply(200, rr.run_command(rc), operation_headers(call, op, location=False))


async def get_run_command(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = _machine(svc, p)
    svc.compute(call, _policy(m, "read"), subscription=m.subscription_id, resource=m.id.lower())
    rc = m.run_commands.get(p["rc"].lower())
    if rc is None:
        raise _not_found(m, p["rc"])
    return Reply(200, rr.run_command(rc, instance_view=call.expand_instance_view()))


async def list_run_commands(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = _machine(svc, p)
    svc.compute(call, _policy(m, "read"), subscription=m.subscription_id, resource=m.id.lower())
    items: list[RunCommand] = list(m.run_commands.values())
    chunk, nxt = page(call, items, svc.world.spec.sim.page_size)
    view = call.expand_instance_view()
    return Reply(200, listing([rr.run_command(rc, instance_view=view) for rc in chunk], nxt))


async def delete_run_command(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    m = _machine(svc, p)
    svc.compute(call, _policy(m, "delete"), subscription=m.subscription_id, resource=m.id.lower())
    op = await svc.world.runs.delete(m, p["rc"])
    if op is None:
        return Reply(204)
    return Reply(202, None, operation_headers(call, op, location=True))


async def get_operation(svc: Service, call: Call, p: dict[str, str]) -> Reply:
    """``Azure-AsyncOperation`` (status body) and ``Location`` (``monitor=true``: 202 until done)."""
    svc.subscription(p["sub"])
    op = svc.world.runs.poll(p["op"])
    if op is None or op.machine.subscription_id.lower() != p["sub"].lower():
        raise err.entity_not_found()
    svc.compute(call, pol.OPERATION, subscription=op.machine.subscription_id, resource=op.machine.id.lower())
    if (call.q("monitor") or "").lower() != "true":
        return Reply(200, rr.operation(op))
    if op.status == "InProgress":
        return Reply(
            202, None, {"Location": f"{call.base}{call.path}?p={_P}&monitor=true&api-version={call.api_version}"}
        )
    if op.status != "Succeeded":
        error = op.error or {"code": "OperationCanceled", "message": "The operation was canceled."}
        raise err.ArmError(409, error["code"], error["message"])
    if op.kind == "delete":
        return Reply(204)
    if op.kind == "action":
        return Reply(200, rr.action_result(op))
    rc = op.run_command
    if rc is not None and op.machine.run_commands.get(rc.name.lower()) is rc:
        return Reply(200, rr.run_command(rc))
    return Reply(200, rr.operation(op))
