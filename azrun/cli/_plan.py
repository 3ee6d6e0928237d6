"""``azrun plan`` (and ``azrun run --dry-run``): what a run would do, with nothing dispatched.

The plan lists:

* the targets, each with the script it would get for its OS (or why it is skipped: stopped, or
  no script for its OS); an obvious OS mismatch is refused exactly as ``run`` refuses it;
* the waves (``--waves``, or the canary as the first wave, or one wave): their targets, size,
  concurrency, soak before each and per-wave error budget;
* the pre-checks: the run-command permissions azrun needs on each resource group (from ARM's
  permissions API: ``Microsoft.Authorization/permissions``; "not checked" when it does not
  answer) and the output storage (the same container read + probe-blob write a run does first);
* the estimated duration from the throttle arithmetic: the PUTs and DELETEs against ARM's write
  bucket (burst, refill per second) and Compute's per-subscription run-command bucket, plus the
  number of concurrency batches times the script's time (unknown in advance: shown per minute of
  script time and for the worst case, every script running to ``--timeout``).

Nothing is written to Azure, to the output container (the probe blob aside, as for every run)
or to the ledger.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from azrun.cli._format import emit
from azrun.cli._globals import current, with_global_options

if TYPE_CHECKING:
    from azrun.cli._platform import OsScripts
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.models import RunSpec
    from azrun.targets import Selection, Selector

__all__ = ["estimate", "register", "show_plan"]

PLAN_EPILOG = """Examples:
  azrun plan --tag env=prod -f patch.sh --max-concurrency 10%
  azrun plan --tag role=web --script-linux hello.sh --script-windows hello.ps1 -o json
  azrun run --tag env=prod -f patch.sh --dry-run     # the same plan
"""


def register(app: typer.Typer) -> None:
    from azrun.cli._run import run_cmd

    def plan_cmd(**kwargs: Any) -> None:
        run_cmd(**{**kwargs, "dry_run": True})

    import functools
    import inspect

    sig = inspect.signature(run_cmd, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name not in ("dry_run", "output_mode")]
    plan = functools.wraps(run_cmd)(plan_cmd)
    plan.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    plan.__annotations__ = {p.name: p.annotation for p in params}
    plan.__doc__ = "Show what a run would do (targets, per-OS script, waves, pre-checks, duration); dispatch nothing."
    app.command("plan", epilog=PLAN_EPILOG)(with_global_options(plan))


def estimate(
    n: int, concurrency: int, canary: int, timeout_s: int, limits: Any = None, *,
    wave_sizes: list[int] | None = None, soak_s: float = 0.0,
) -> dict[str, Any]:
    """Seconds the throttle arithmetic allows for ``n`` targets (see the module docstring); with
    waves, each wave is its own batches (a wave waits for the one before) plus the soaks."""
    from azrun.throttle import ThrottleLimits

    limits = limits or ThrottleLimits()
    writes = 2 * n  # one PUT and one cleanup DELETE per target
    arm = limits.arm_writes
    compute = limits.sub_update_vm
    dispatch_s = max(0.0, (writes - arm.burst) / arm.per_s, (writes - compute.burst) / compute.per_s)
    if wave_sizes is None:
        rest = max(0, n - canary)
        wave_sizes = ([canary] if canary else []) + ([rest] if rest else [])
    batches = sum(math.ceil(size / concurrency) for size in wave_sizes if size and concurrency)
    soaks = soak_s * max(0, len(wave_sizes) - 1)
    return {
        "targets": n,
        "armWrites": writes,
        "dispatchSeconds": round(dispatch_s, 1),
        "batches": batches,
        "soakSeconds": round(soaks, 1),
        "secondsPerMinuteOfScript": round(batches * 60 + dispatch_s + soaks, 1),
        "worstCaseSeconds": round(batches * timeout_s + dispatch_s + soaks, 1),
        "basis": f"ARM writes: burst {arm.burst:g}, {arm.per_s:g}/s; Compute run commands per subscription: "
        f"burst {compute.burst:g}, {compute.per_s * 60:g}/min",
    }


async def _permissions(factory: ClientFactory, selection: Selection) -> list[dict[str, Any]]:
    """Per resource group: the run-command actions ARM says this identity lacks (or not checked)."""
    from azure.core.exceptions import AzureError
    from azure.core.rest import HttpRequest

    from azrun.permissions import ACTIONS

    needed = [a for a in ACTIONS if "runCommands" in a or a.endswith("virtualMachines/read")]
    groups = sorted({(t.subscription_id, t.resource_group) for t in selection.targets})
    out: list[dict[str, Any]] = []
    for sub, rg in groups:
        client = factory.aresources(sub)
        url = (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Authorization/permissions"
               "?api-version=2022-04-01")
        try:
            response = await client._client.send_request(HttpRequest("GET", url))
            body = response.json() if response.status_code == 200 else None
        except (AzureError, ValueError):
            body = None
        if not isinstance(body, dict):
            out.append({"scope": f"{sub}/{rg}", "checked": False, "missing": [],
                        "note": "not checked: ARM's permissions API did not answer"})
            continue
        allowed = [a for p in body.get("value", []) for a in p.get("actions", [])]
        denied = [a for p in body.get("value", []) for a in p.get("notActions", [])]
        missing = [a for a in needed if not any(fnmatch.fnmatch(a.lower(), x.lower()) for x in allowed)
                   or any(fnmatch.fnmatch(a.lower(), x.lower()) for x in denied)]
        out.append({"scope": f"{sub}/{rg}", "checked": True, "missing": missing})
    return out


async def _storage(settings: Settings, factory: ClientFactory, selection: Selection) -> dict[str, Any]:
    from azrun.errors import AzrunError
    from azrun.output import OutputStore

    try:
        store = await OutputStore.from_settings(settings, factory, verify=True)
    except AzrunError as exc:
        return {"configured": True, "ok": False, "error": exc.message, "hint": exc.hint}
    if store is None:
        return {"configured": False, "ok": True, "note": "no output storage: only the last 4 KB of output is kept"}
    try:
        problems = [p for p in (store.check_target_identity(t) for t in selection.targets) if p]
        return {"configured": True, "ok": not problems, "container": store.container_url, "problems": problems}
    finally:
        await store.aclose()


async def _plan(
    selector: Selector, spec: RunSpec, scripts: OsScripts | None, opts: Any, settings: Settings
) -> dict[str, Any]:
    from azrun.cli._options import client_factory, default_subscriptions
    from azrun.cli._platform import split_by_os
    from azrun.targets import resolve

    factory = client_factory(settings)
    try:
        selection = await resolve(selector, factory, default_subscriptions=default_subscriptions(settings))
        if scripts is not None:
            selection, _ = split_by_os(selection, scripts)
        permissions = await _permissions(factory, selection)
        storage = await _storage(settings, factory, selection)
    finally:
        await factory.aclose()
    n = len(selection.targets)
    concurrency = opts.max_concurrency.concurrency(n) if n else 1
    canary = min(int(opts.canary or 0), n)
    targets = []
    for t in selection.targets:
        got = scripts.for_os(t.os) if scripts is not None else None
        targets.append({"name": t.name, "id": t.resource_id, "os": t.os, "action": "run",
                        "script": got[1] if got else spec.script_name})
    targets += [{"name": s.target.name, "id": s.target.resource_id, "os": s.target.os, "action": "skip",
                 "reason": s.reason} for s in selection.skipped]
    waves, sizes, plan = _waves(selection.targets, opts, concurrency)
    return {
        "dispatch": False,
        "targets": targets,
        "counts": {"run": n, "skip": len(selection.skipped)},
        "waves": waves,
        "maxErrors": str(opts.max_errors),
        "timeoutS": spec.timeout_s,
        "preChecks": {"permissions": permissions, "storage": storage},
        "estimate": estimate(n, concurrency, canary, spec.timeout_s, wave_sizes=sizes,
                             soak_s=plan.soak_s if plan is not None else 0.0),
    }


def _waves(targets: Any, opts: Any, concurrency: int) -> tuple[list[dict[str, Any]], list[int], Any]:
    """The rollout's waves as the run would make them (``--waves``, ``--canary``, or one wave)."""
    plan = opts.plan()
    n = len(targets)
    if plan is None:
        return ([{"wave": 1, "targets": n, "concurrency": concurrency}] if n else []), [n], None
    assigned = plan.assign(targets)
    labels = plan.labels(targets)
    out, sizes = [], []
    for i, label in enumerate(labels):
        size = assigned.count(i)
        sizes.append(size)
        wave: dict[str, Any] = {"wave": i + 1, "targets": size, "concurrency": min(concurrency, size),
                                "label": label, "names": [t.name for t, w in zip(targets, assigned, strict=True)
                                                          if w == i]}
        budget = plan.wave_budget(size)
        if budget is not None:
            wave["maxErrors"] = budget
        if plan.canary and i == 0:
            wave["note"] = "canary: the rest waits until all succeed"
        elif i > 0 and plan.soak_s:
            wave["soakBeforeS"] = plan.soak_s
        out.append(wave)
    return out, sizes, plan


def _table(doc: dict[str, Any]) -> str:
    lines = ["PLAN (nothing dispatched)", "", f"{'TARGET':<28} {'OS':<8} {'ACTION':<7} SCRIPT / REASON"]
    for t in doc["targets"]:
        lines.append(f"{t['name']:<28} {t['os']:<8} {t['action']:<7} {t.get('script') or t.get('reason') or ''}")
    lines.append("")
    for w in doc["waves"]:
        extra = f", {w['concurrency']} at a time"
        extra += f", soak {w['soakBeforeS']:g}s before" if w.get("soakBeforeS") else ""
        extra += f", stops the rollout past {w['maxErrors']} error(s)" if "maxErrors" in w else ""
        extra += f" ({w['note']})" if w.get("note") else ""
        label = f" [{w['label']}]" if w.get("label") and not w["label"].endswith(" targets") else ""
        lines.append(f"wave {w['wave']}{label}: {w['targets']} target(s){extra}")
    lines.append(f"max errors {doc['maxErrors']}; timeout {doc['timeoutS']}s per target")
    for p in doc["preChecks"]["permissions"]:
        state = p.get("note") or ("ok" if not p["missing"] else "MISSING " + ", ".join(p["missing"]))
        lines.append(f"permissions {p['scope']}: {state}")
    st = doc["preChecks"]["storage"]
    if not st["configured"]:
        lines.append(f"storage: {st['note']}")
    elif st["ok"]:
        lines.append(f"storage: ok ({st['container']})")
    else:
        lines.append(f"storage: FAILED {st.get('error') or '; '.join(st.get('problems', []))}")
    e = doc["estimate"]
    lines.append(
        f"estimate: dispatch >= {e['dispatchSeconds']}s for {e['armWrites']} ARM writes; {e['batches']} batch(es): "
        f"about {e['secondsPerMinuteOfScript']}s per minute of script time, at most {e['worstCaseSeconds']}s "
        f"if every script runs to its timeout" + (f", soaks included ({e['soakSeconds']:g}s)" if e["soakSeconds"] else "")
        + f" ({e['basis']})"
    )
    return "\n".join(lines)


def show_plan(
    selector: Selector, spec: RunSpec, scripts: OsScripts | None, opts: Any, settings: Settings,
    state_dir: Path | None,
) -> int:
    """Print the plan; exit 0 when the pre-checks pass, else the code of what failed."""
    from azrun.cli._exit import ExitCode

    options = current()
    doc = asyncio.run(_plan(selector, spec, scripts, opts, settings))
    emit(doc, options.output, sys.stdout, query=options.query, table=_table, color=not options.colors_off)
    if any(p["missing"] for p in doc["preChecks"]["permissions"]):
        return int(ExitCode.PERMISSION)
    if not doc["preChecks"]["storage"]["ok"]:
        return int(ExitCode.OUTPUT_STORAGE)
    return int(ExitCode.OK)
