"""The data a run report is built from: offsets, counts, masking, fallbacks, and the HTML's safety."""

from __future__ import annotations

import json
import re

from report_support import make_record, make_run, make_target, mixed_records

from azrun.models import TargetState
from azrun.report import ReportData, build_report_data, embed_json, render_html


def test_offsets_counts_and_span_come_from_the_records() -> None:
    data = build_report_data(make_run(), mixed_records())
    assert data.counts == {"Succeeded": 1, "Failed": 1, "TimedOut": 1, "Skipped": 1}
    a, b, c, d = data.targets
    assert (a.dispatched, a.started, a.ended, a.duration) == (1.0, 10.0, 20.0, 10.0)
    assert b.resource_group == "rg-other"  # ARM ids vary in case; groups compare lower-cased
    assert c.exit_code is None and d.dispatched is None and d.duration is None
    assert data.span_s == 70.0  # the last end, past the run's recorded end
    assert data.throttle == {"armRequests": 12}
    assert data.driver == {"host": "admin-box", "pid": 123}


def test_output_prefers_the_blobs_and_says_when_it_falls_back() -> None:
    records = mixed_records()
    data = build_report_data(make_run(), records, outputs={records[0].target.resource_id.upper(): ("full\nout\n", "err\n")})
    a, b, _, d = data.targets
    assert (a.stdout, a.stderr, a.output_note) == ("full\nout\n", "err\n", "")
    assert "could not be read" in b.output_note
    assert "no output storage" in d.output_note


def test_every_text_from_a_script_or_message_is_masked() -> None:
    data = build_report_data(make_run(script_name="secret=hunter2.sh"), mixed_records(),
                             mask=lambda text: text.replace("hunter2", "***"))
    blob = json.dumps(data.to_json())
    assert "hunter2" not in blob and blob.count("***") >= 2


def test_keys_are_stable_and_unique_per_resource_id() -> None:
    records = [*mixed_records(), make_record(4, make_target("vm-a", rg="rg-two"), TargetState.SUCCEEDED, exit_code=0)]
    keys = [t.key for t in build_report_data(make_run(), records).targets]
    assert len(set(keys)) == len(keys)
    again = build_report_data(make_run(), [make_record(0, make_target("vm-a"), TargetState.SUCCEEDED)])
    assert again.targets[0].key == keys[0]


def test_embedded_json_cannot_close_the_script_element() -> None:
    evil = "</script><script>alert(1)</script><!-- \u2028"
    text = embed_json({"x": evil})
    assert "</script" not in text and "<!--" not in text and "\u2028" not in text
    assert json.loads(text) == {"x": evil}


def test_the_page_is_self_contained_and_carries_the_data() -> None:
    data = build_report_data(make_run(), mixed_records(), outputs={}, throttle={"throttled429": 0, "bucketWaitS": 1.5})
    page = render_html(data)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page must fetch nothing"
    assert "<link" not in page and "@import" not in page
    found = re.search(r'<script type="application/json" id="azrun-data">(.*?)</script>', page, re.S)
    assert found is not None
    embedded = json.loads(found.group(1))
    assert embedded["run_id"] == data.run_id and len(embedded["targets"]) == 4
    assert embedded["throttle"] == {"armRequests": 12, "throttled429": 0, "bucketWaitS": 1.5}
    assert isinstance(data, ReportData)


def test_the_runs_fingerprints_mask_its_secrets_and_never_reach_the_page() -> None:
    from dataclasses import replace

    from azrun.redact import FINGERPRINTS_KEY, SecretFingerprints
    from azrun.report import render_html
    from azrun.report._collect import run_mask

    secret = "pa55-w0rd-for-report"
    prints = SecretFingerprints.of([secret]).to_dict()
    run = replace(make_run(), options={"max_concurrency": 2, FINGERPRINTS_KEY: prints,
                                       "waves": [{"wave": 1, "targets": 1}, {"wave": 2, "targets": 3}],
                                       "runStats": {"armRequests": 40}, "driver": {"identity": "x"}})
    mask = run_mask(run.options)
    assert mask(f"login {secret} ok") == "login *** ok"
    assert mask("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc") != "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc"
    records = [make_record(0, make_target("vm-a"), TargetState.SUCCEEDED, exit_code=0, dispatched=1, started=2,
                           ended=3, stdout=f"echo {secret}\n")]
    data = build_report_data(run, records, mask=mask)
    page = render_html(data)
    assert secret not in page and prints["salt"] not in page
    assert data.options["waves"] == [{"wave": 1, "targets": 1}, {"wave": 2, "targets": 3}]
    assert "runStats" not in data.options and FINGERPRINTS_KEY not in data.options
    assert data.targets[0].stdout == "echo ***\n"
