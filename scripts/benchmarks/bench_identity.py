"""Benchmark: managed-identity token requests, azrun's process credential vs plain azure-identity.

The local IMDS keeps Azure's documented limits (20 token requests/s and 5 at once per VM,
20 ms per answer); beyond them it answers 429. ARM's read bucket is raised for this benchmark
(and Compute's VM GET buckets) so that only identity is measured (the throttle is off in every variant). Counts come from the
simulator's request log (``service: imds``, ``op: IMDS_Token``).

1. **One process, 1,000 concurrent operations**: ``clients`` Compute clients x ``ops`` VM GETs
   each, all started at once:

   * ``azrun``: every client from its own :class:`azrun.clients.ClientFactory`; they share the
     process credential (single flight, one cache, IMDS pacing).
   * ``plain``: every client with its own ``azure.identity.aio.ManagedIdentityCredential()``
     (the SDK's auth policy still serialises the token request within one client).
   * ``plain-get-token``: the same credentials, but each operation calls ``get_token`` itself
     (as code that fetches tokens by hand does): no per-client lock at all.

2. **Twenty processes on one VM**: ``processes`` Python processes each build a client, wait at
   a barrier, then do one VM GET at the same moment. ``azrun`` shares ``AZRUN_RUNTIME_DIR``
   (machine-wide pacing); ``plain`` uses ``ManagedIdentityCredential``. Reported: IMDS requests,
   IMDS 429s, whether every process succeeded, wall time from the barrier, each child's CPU
   (``wait4``) and peak RSS (its own ``VmHWM``: ``ru_maxrss`` of a child started by a large
   parent includes the parent's memory at the fork).

Goals: IMDS gets 1 request per identity + scope per process, and no IMDS 429.

Run: ``python scripts/benchmarks/bench_identity.py [clients ops processes]`` (default 50 20 20).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(_HERE.parents[1]), str(_HERE)) if p not in sys.path]

import _common  # noqa: E402

IN_PROCESS_VARIANTS = ("azrun", "plain", "plain-get-token")
PROCESS_VARIANTS = ("azrun", "plain")
# Identity is under test, not ARM or Compute: their read buckets are made roomy.
ROOMY_READS = {"arm_reads": [1_000_000, 100_000], "vm_get_resource": [1_000_000, 100_000],
               "vm_get_subscription": [1_000_000, 100_000]}
IMDS_REFILL_PAUSE_S = 1.5  # let the local IMDS's bucket refill between variants


def _imds(entries: list[dict[str, Any]]) -> dict[str, int]:
    tokens = [e for e in entries if e.get("service") == "imds" and e.get("op") == "IMDS_Token"]
    return {"imds_requests": len(tokens), "imds_429": sum(e["status"] == 429 for e in tokens),
            # ``inflight`` counts the others being served when one arrived; a 429 says nothing of
            # concurrency (it is refused at the limit), so only admitted requests count.
            "imds_max_inflight": max((int(e.get("inflight", 0)) + 1 for e in tokens if e["status"] != 429), default=0)}


def _plain_client(credential: Any) -> Any:
    """An aio Compute client exactly as azrun would build it, but with the credential given."""
    from azure.mgmt.compute.aio import ComputeManagementClient

    from azrun.cloud import Cloud

    cloud = Cloud.from_env(os.environ)
    return ComputeManagementClient(credential, _common.SUB, base_url=cloud.arm_endpoint,
                                   credential_scopes=[cloud.management_scope], connection_verify=cloud.ca_bundle)


# -- 1. one process -----------------------------------------------------------------------------------
async def _in_process(variant: str, clients: int, ops: int, vms: int) -> tuple[float, list[str]]:
    """Run one variant; (wall s, error names)."""
    from azure.identity.aio import ManagedIdentityCredential

    from azrun.clients import ClientFactory
    from azrun.cloud import Cloud

    factories: list[ClientFactory] = []
    credentials: list[Any] = []
    compute: list[Any] = []
    for _ in range(clients):
        if variant == "azrun":
            factories.append(ClientFactory.from_env(throttle=False))
            compute.append(factories[-1].acompute(_common.SUB))
        else:
            credentials.append(ManagedIdentityCredential())
            compute.append(_plain_client(credentials[-1]))
    scope = Cloud.from_env(os.environ).management_scope

    async def op(c: int, k: int) -> None:
        if variant == "plain-get-token":
            await credentials[c].get_token(scope)
        else:
            await compute[c].virtual_machines.get(_common.RG, _common.vm_name((c * ops + k) % vms + 1))

    began = time.monotonic()
    try:
        results = await asyncio.gather(*(op(c, k) for c in range(clients) for k in range(ops)), return_exceptions=True)
        wall = time.monotonic() - began
    finally:
        for f in factories:
            await f.aclose()
        for client in compute if variant != "azrun" else ():
            await client.close()
        for cred in credentials:
            await cred.close()
    return wall, [type(r).__name__ for r in results if isinstance(r, BaseException)]


def in_process(sim: Any, where: Path, variant: str, clients: int, ops: int, vms: int) -> dict[str, Any]:
    from azrun import auth

    auth.clear_process_cache()  # a fresh process's view: no token yet
    mark = len(sim.requests())
    with _common.environ({**sim.env, "AZRUN_RUNTIME_DIR": str(where / f"runtime-{variant}")}), _common.self_usage() as usage:
        wall, errors = asyncio.run(_in_process(variant, clients, ops, vms))
    auth.clear_process_cache()
    return {"variant": variant, "operations": clients * ops, "clients": clients, "wall_s": round(wall, 2),
            "failed": len(errors), "errors": sorted(set(errors)), **_imds(sim.requests()[mark:]),
            "cpu_s": round(usage[0].cpu_s, 2)}


# -- 2. twenty processes ------------------------------------------------------------------------------
async def _child_op(variant: str) -> None:
    if variant == "azrun":
        from azrun.clients import ClientFactory

        factory = ClientFactory.from_env(throttle=False)
        compute = factory.acompute(_common.SUB)
    else:
        from azure.identity.aio import ManagedIdentityCredential

        credential = ManagedIdentityCredential()
        compute = _plain_client(credential)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the barrier
    try:
        await compute.virtual_machines.get(_common.RG, _common.vm_name(1))
    finally:
        if variant == "azrun":
            await factory.aclose()
        else:
            await compute.close()
            await credential.close()


def child_main(variant: str) -> int:
    """One process of part 2: build the client, wait for ``go``, one GET; exit 0 on success."""
    try:
        asyncio.run(_child_op(variant))
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:160]
        print(f"error: {type(exc).__name__}: {first_line}", flush=True)
        return 1
    print(f"ok {_common.peak_rss_mb():.1f}", flush=True)
    return 0


def processes(sim: Any, where: Path, variant: str, count: int) -> dict[str, Any]:
    env = {**os.environ, **sim.env, "AZRUN_RUNTIME_DIR": str(where / f"runtime-procs-{variant}"),
           "AZRUN_STATE_DIR": str(where / "state")}
    procs = [subprocess.Popen([sys.executable, __file__, "--child", variant], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(count)]
    results: list[tuple[int, str, _common.Usage]] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {variant} child did not start")
        mark = len(sim.requests())
        began = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.read()
            code, usage = _common.child_usage(proc, timeout_s=120)
            results.append((code, out.strip(), usage))
        wall = time.monotonic() - began
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rss = [float(out.split()[1]) for code, out, _ in results if code == 0 and out.startswith("ok ")]
    errors = Counter(out for code, out, _ in results if code != 0)
    return {"variant": variant, "processes": count, "succeeded": sum(code == 0 for code, _, _ in results),
            "wall_s": round(wall, 2), **_imds(sim.requests()[mark:]),
            "child_cpu_s_mean": round(sum(u.cpu_s for _, _, u in results) / count, 2),
            "child_peak_rss_mb_max": round(max(rss, default=0.0), 1), "errors": dict(errors)}


# -- entry points ----------------------------------------------------------------------------------
def run(clients: int = 50, ops: int = 20, procs: int = 20, *, in_process_variants: tuple[str, ...] = IN_PROCESS_VARIANTS,
        process_variants: tuple[str, ...] = PROCESS_VARIANTS, pause_s: float = IMDS_REFILL_PAUSE_S) -> dict[str, Any]:
    """Both parts against one local Azure; one dict per variant (``pause_s`` between variants)."""
    azure_log = logging.getLogger("azure")
    level = azure_log.level
    azure_log.setLevel(logging.CRITICAL)  # plain credentials log every 429 they meet
    where = _common.workdir("identity")
    vms = max(1, min(clients, 50))
    out: dict[str, Any] = {"in_process": [], "processes": []}
    try:
        with _common.start_sim(vms, where / "sim", limits=ROOMY_READS) as sim:
            for variant in in_process_variants:
                time.sleep(pause_s)
                out["in_process"].append(in_process(sim, where, variant, clients, ops, vms))
            for variant in process_variants:
                time.sleep(pause_s)
                out["processes"].append(processes(sim, where, variant, procs))
    finally:
        azure_log.setLevel(level)
        shutil.rmtree(where, ignore_errors=True)
    return out


def report(result: dict[str, Any]) -> list[_common.Row]:
    rows: list[_common.Row] = []
    for r in result["in_process"]:
        label = f"1 process, {r['operations']} ops, {r['variant']}"
        rows += [
            _common.Row(f"{label}: IMDS requests", str(r["imds_requests"]), "1", r["imds_requests"] == 1),
            _common.Row(f"{label}: IMDS 429s", str(r["imds_429"]), "0", r["imds_429"] == 0),
            _common.Row(f"{label}: failed ops", str(r["failed"]), "0", r["failed"] == 0),
            _common.Row(f"{label}: wall", f"{r['wall_s']:.2f} s"),
        ]
    for r in result["processes"]:
        label = f"{r['processes']} processes, {r['variant']}"
        rows += [
            _common.Row(f"{label}: IMDS requests", str(r["imds_requests"]), str(r["processes"]),
                        r["imds_requests"] == r["processes"]),
            _common.Row(f"{label}: IMDS 429s", str(r["imds_429"]), "0", r["imds_429"] == 0),
            _common.Row(f"{label}: IMDS in flight (max)", str(r["imds_max_inflight"]), "<= 5", r["imds_max_inflight"] <= 5),
            _common.Row(f"{label}: succeeded", f"{r['succeeded']}/{r['processes']}", "all",
                        r["succeeded"] == r["processes"]),
            _common.Row(f"{label}: wall from the barrier", f"{r['wall_s']:.2f} s"),
            _common.Row(f"{label}: child CPU (mean) / peak RSS (max)",
                        f"{r['child_cpu_s_mean']:.2f} s / {r['child_peak_rss_mb_max']:.0f} MB"),
        ]
    return rows


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--child":
        return child_main(argv[1])
    clients, ops, procs = (int(a) for a in argv[:3]) if len(argv) >= 3 else (50, 20, 20)
    result = run(clients, ops, procs)
    print(json.dumps(result, indent=1))
    _common.print_table(report(result), title="\nidentity: IMDS at 20 requests/s and 5 at once")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
