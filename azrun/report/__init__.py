"""Run reports: one self-contained HTML page per run (``azrun report RUN --html FILE``).

The page shows the run's spec (secrets masked), who ran it, counts by state, a timeline with one
bar per target (waiting for a slot, dispatched, running; coloured by final state), a filterable,
sortable table with each target's whole output, and the run's throttle figures. It needs no
network: CSS, JS and data are inline, so it works offline and as an e-mail attachment.

    from azrun.ledger import Ledger
    from azrun.report import acollect_report, render_html

    data = await acollect_report(Ledger.open(state_dir), run_id, reader=store.read_url)
    Path("run.html").write_text(render_html(data), encoding="utf-8")
"""

from __future__ import annotations

from azrun.report._collect import MAX_OUTPUT_BYTES, BlobReader, acollect_report
from azrun.report._data import STATE_ORDER, ReportData, ReportTarget, build_report_data
from azrun.report._html import embed_json, render_html

__all__ = [
    "MAX_OUTPUT_BYTES",
    "STATE_ORDER",
    "BlobReader",
    "ReportData",
    "ReportTarget",
    "acollect_report",
    "build_report_data",
    "embed_json",
    "render_html",
]
