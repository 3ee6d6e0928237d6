"""``azrun targets``: which machines a selector picks, before anything runs on them.

Output:

* ``--output table`` (default): one row per matched machine (name, kind, resource group,
  location, OS, power, tags; subscription too when there are several); machines that matched
  but are not running are listed with the reason they will be skipped; with ``--explain`` a
  second table lists every machine in scope that the filters left out, and why.
* ``-o json`` (one JSON array), ``jsonl`` (one object per line), ``yaml``, ``tsv``, ``--query``:
  ``Target.to_dict()`` plus ``"status"`` (``selected`` | ``skipped`` | ``not-selected``) and, for
  the last two, ``"reason"``. Summaries go to stderr so stdout stays machine-readable.

The last lines are counts by kind and power state and the number of ARM requests used. A
selector that matches nothing is not an error here (exit 0, with a message naming the selector
and subscriptions); ``azrun run`` refuses to run on nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from azrun.cli._format import camel_keys, emit
from azrun.cli._globals import current, with_global_options
from azrun.cli._options import (
    AllOpt,
    AllSubscriptionsOpt,
    ExcludeTagOpt,
    IncludeStoppedOpt,
    NameOpt,
    OsOpt,
    ResourceGroupOpt,
    SubscriptionOpt,
    TagOpt,
    client_factory,
    default_subscriptions,
    selector_from_options,
)

if TYPE_CHECKING:
    from azrun.models import Target
    from azrun.targets import Selection, Selector

ExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain", "--dry-run",
        help="Also list every machine in scope that was not selected, with the reason.",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("targets")(with_global_options(targets_command))


def targets_command(
    tag: TagOpt = None,
    exclude_tag: ExcludeTagOpt = None,
    subscription: SubscriptionOpt = None,
    all_subscriptions: AllSubscriptionsOpt = False,
    resource_group: ResourceGroupOpt = None,
    name: NameOpt = None,
    os: OsOpt = None,
    include_stopped: IncludeStoppedOpt = False,
    all_: AllOpt = False,
    explain: ExplainOpt = False,
) -> None:
    """List the machines a selector picks: kind, power state, tags, and why any are skipped.

    Examples:
      azrun targets --tag env=prod --tag role=web
      azrun targets -g rg-web --name 'vm-web-*' --explain
      azrun targets --all --all-subscriptions -o json
      azrun targets --tag role=web --query "[?os=='Windows'].name" -o tsv
    """
    import asyncio

    selector = selector_from_options(
        tag=tag, exclude_tag=exclude_tag, subscription=subscription, all_subscriptions=all_subscriptions,
        resource_group=resource_group, name=name, os=os, include_stopped=include_stopped, select_all=all_,
    )
    options = current()
    selection = asyncio.run(_resolve(selector, explain=explain))
    if options.output.machine_readable or options.query:
        emit(json_records(selection), options.output, sys.stdout, query=options.query, color=not options.colors_off)
        if options.notes:
            write_summary(selection, sys.stderr)
    else:
        write_table(selection, sys.stdout)
        if options.notes:
            write_summary(selection, sys.stdout)


async def _resolve(selector: Selector, *, explain: bool) -> Selection:
    from azrun.config import Settings
    from azrun.targets import resolve

    settings = Settings.load()
    factory = client_factory(settings)
    try:
        return await resolve(
            selector, factory, default_subscriptions=default_subscriptions(settings), explain=explain
        )
    finally:
        await factory.aclose()


# ----------------------------------------------------------------------------- rendering
def json_records(selection: Selection) -> list[dict[str, Any]]:
    """The records (camelCase keys), selected first, then skipped, then not selected."""
    records = [{"status": "selected", **_target_dict(t)} for t in selection.targets]
    records += [{"status": "skipped", "reason": s.reason, **_target_dict(s.target)} for s in selection.skipped]
    records += [{"status": "not-selected", "reason": n.reason, **n.to_dict()} for n in selection.not_selected]
    return [camel_keys(r) for r in records]


def _target_dict(t: Target) -> dict[str, Any]:
    return {**t.to_dict(), "vmName": t.vm_name}


def _tags_text(t: Target) -> str:
    return ",".join(f"{k}={v}" for k, v in t.tags)


def write_table(selection: Selection, out: TextIO) -> None:
    """Rich tables: matched machines, then (with --explain) the ones left out."""
    from rich.console import Console
    from rich.table import Table

    if not selection.matched and not selection.not_selected:
        return
    console = Console(file=out, highlight=False, width=None if out.isatty() else 220)
    many = len({t.subscription_id for t in (*selection.targets, *(s.target for s in selection.skipped))}) > 1
    if selection.matched:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("NAME", "KIND", *(("SUBSCRIPTION",) if many else ()), "RESOURCE GROUP", "LOCATION", "OS",
                    "POWER", "TAGS"):
            table.add_column(col, no_wrap=col != "TAGS")
        rows = [(t, "") for t in selection.targets] + [(s.target, s.reason) for s in selection.skipped]
        for t, reason in rows:
            power = f"[yellow]{t.power_state}[/] (skipped)" if reason else t.power_state
            sub = (t.subscription_id,) if many else ()
            table.add_row(t.name, t.kind.value, *sub, t.resource_group, t.location, t.os, power, _tags_text(t))
        console.print(table)
        for s in selection.skipped:
            console.print(f"skipped {s.target.name}: {s.reason}", markup=False)
    if selection.not_selected:
        console.print("\nnot selected:", style="bold")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("NAME", "KIND", "RESOURCE GROUP", "REASON"):
            table.add_column(col, no_wrap=col != "REASON")
        for n in selection.not_selected:
            table.add_row(n.name, n.kind, n.resource_group, n.reason)
        console.print(table)


def summary_lines(selection: Selection) -> list[str]:
    """Counts by kind and power state (or the no-match message) and the ARM requests used."""
    if not selection.matched:
        lines = [selection.no_match_message()]
    else:
        counts = selection.counts()
        kinds = ", ".join(f"{v} {k}" for k, v in counts["kind"].items())
        powers = ", ".join(f"{v} {k}" for k, v in counts["power"].items())
        lines = [
            f"{selection.matched} matched: {len(selection.targets)} selected, {len(selection.skipped)} skipped",
            f"by kind: {kinds}",
            f"by power state: {powers}",
        ]
    if selection.not_selected:
        lines.append(f"{len(selection.not_selected)} in scope not selected")
    n_req, n_sub = selection.arm_requests, len(selection.subscriptions)
    lines.append(f"{n_req} ARM request{'s' * (n_req != 1)} in {n_sub} subscription{'s' * (n_sub != 1)}")
    return lines


def write_summary(selection: Selection, out: TextIO) -> None:
    for line in summary_lines(selection):
        out.write(line + "\n")
    out.flush()
