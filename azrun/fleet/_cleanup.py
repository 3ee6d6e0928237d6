"""``azrun cleanup``: delete azrun's finished run commands so machines stay under Azure's 25.

Two sweeps:

* **ledger** (always): every target the ledger says has an undeleted run command, finished
  (terminal state) more than ``older_than_s`` ago, and whose run is not driven by a live process.
* **machines** (``all_azrun``): list the run commands of the given machines (or of every machine
  the ledger knows) and delete those that are azrun's (name prefix ``azrun-`` AND tag
  ``azrun-run``), finished, and ended more than ``older_than_s`` ago. Run commands azrun did not
  create, and running ones, are never touched.

A DELETE answers 202 and lasts (10-211 s on Azure) while the run command is still listed as
``Deleting`` and still counts toward the machine's 25: each delete is read back until it is gone,
for up to ``wait_s``; one still listed then is reported in ``deleting``, not ``deleted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from azrun.fleet._delete import delete_run_command
from azrun.fleet._dispatch import Dispatcher
from azrun.models import Target, TargetState
from azrun.runcommand import classify_error, is_azrun_run_command

if TYPE_CHECKING:
    from azrun.ledger import Ledger

__all__ = ["CleanupReport", "cleanup"]


@dataclass
class CleanupReport:
    """What a cleanup deleted (run command ids), left alone, and could not delete."""

    deleted: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, error)
    deleting: list[str] = field(default_factory=list)  # accepted, still listed when the wait ended
    arm_requests: int = 0
    dry_run: bool = False
    wait_s: float = 300.0

    def count(self, status: int) -> None:
        """Count one ARM answer's status (429s are the throttling this cleanup met)."""
        self.arm_requests += 1


def _rc_id(target: Target, name: str) -> str:
    return f"{target.resource_id}/runCommands/{name}"


async def cleanup(
    client: Dispatcher,
    ledger: Ledger,
    *,
    older_than_s: float,
    all_azrun: bool = False,
    machines: Sequence[Target] | None = None,
    dry_run: bool = False,
    concurrency: int = 16,
    wait_s: float = 300.0,
) -> CleanupReport:
    report = CleanupReport(dry_run=dry_run)
    report.wait_s = wait_s
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=max(0.0, older_than_s))
    slots = asyncio.Semaphore(max(1, concurrency))
    live = {r.id for r in ledger.runs(limit=1_000_000) if r.driven_here_by_live_process}
    done: set[str] = set()
    await _ledger_sweep(client, ledger, report, cutoff, live, done, slots, dry_run)
    if all_azrun:
        targets = list(machines) if machines is not None else _ledger_machines(ledger)
        await asyncio.gather(
            *(_machine_sweep(client, ledger, report, t, cutoff, live, done, slots, dry_run) for t in targets)
        )
    return report


async def _ledger_sweep(
    client: Dispatcher, ledger: Ledger, report: CleanupReport, cutoff: datetime, live: set[str],
    done: set[str], slots: asyncio.Semaphore, dry_run: bool,
) -> None:
    async def one(rec_target: Target, run_id: str, name: str) -> None:
        rid = _rc_id(rec_target, name)
        done.add(rid.lower())
        if dry_run:
            report.deleted.append(rid)
            return
        async with slots:
            if not await _delete(client, report, rec_target, name, rid):
                return
        ledger.update_target(run_id, rec_target.resource_id, cleaned_at=datetime.now(timezone.utc))

    jobs = []
    for rec in ledger.uncleaned():
        if rec.state in (TargetState.UNDELIVERABLE, TargetState.SKIPPED):
            continue  # ARM refused the PUT (or it was never sent): nothing to delete
        name = rec.run_command_name or ""
        rid = _rc_id(rec.target, name)
        if rec.run_id in live and not rec.state.terminal:
            report.kept.append((rid, "its run is still in progress"))
        elif not rec.state.terminal:
            report.kept.append((rid, f"state {rec.state.value}: use 'azrun cancel {rec.run_id}' or 'azrun resume'"))
        elif (rec.ended_at or rec.updated_at) > cutoff:
            report.kept.append((rid, "finished too recently (see --older-than)"))
        else:
            jobs.append(one(rec.target, rec.run_id, name))
    await asyncio.gather(*jobs)


async def _delete(client: Dispatcher, report: CleanupReport, target: Target, name: str, rid: str) -> bool:
    """DELETE and wait until it is gone; True once gone (recorded in ``report`` either way)."""
    done = await delete_run_command(client, target, name, counter=report.count, wait_s=report.wait_s, retries=2)
    if not done.accepted:
        report.failed.append((rid, done.failure.describe() if done.failure else "not deleted"))
        return False
    if not done.gone:
        report.deleting.append(rid)
        return False
    report.deleted.append(rid)
    return True


def _ledger_machines(ledger: Ledger) -> list[Target]:
    seen: dict[str, Target] = {}
    for run in ledger.runs(limit=1_000_000):
        for rec in ledger.targets(run.id):
            seen.setdefault(rec.target.resource_id.lower(), rec.target)
    return list(seen.values())


async def _machine_sweep(
    client: Dispatcher, ledger: Ledger, report: CleanupReport, target: Target, cutoff: datetime,
    live: set[str], done: set[str], slots: asyncio.Semaphore, dry_run: bool,
) -> None:
    async with slots:
        try:
            found = await client.list(target, counter=report.count)
        except Exception as exc:
            report.failed.append((target.resource_id, f"listing run commands: {classify_error(exc).describe()}"))
            return
    async def one(name: str, rid: str, run_id: str) -> None:
        async with slots:
            if not await _delete(client, report, target, name, rid):
                return
        if ledger.target(run_id, target.resource_id) is not None:
            ledger.update_target(run_id, target.resource_id, cleaned_at=datetime.now(timezone.utc))

    jobs = []
    for info in found:
        rid = info.id or _rc_id(target, info.name)
        if rid.lower() in done or not is_azrun_run_command(info.name, info.tags):
            continue
        run_id = info.tags.get("azrun-run", "")
        if info.provisioning_state.lower() == "deleting":
            report.deleting.append(rid)  # already going (it still counts toward the 25 meanwhile)
            continue
        if not info.finished:
            report.kept.append((rid, f"still {info.execution_state or info.provisioning_state or 'running'}"))
            continue
        if run_id in live:
            report.kept.append((rid, "its run is still in progress"))
            continue
        if info.end_time is not None and info.end_time > cutoff:
            report.kept.append((rid, "finished too recently (see --older-than)"))
            continue
        done.add(rid.lower())
        if dry_run:
            report.deleted.append(rid)
            continue
        jobs.append(one(info.name, rid, run_id))
    await asyncio.gather(*jobs)
