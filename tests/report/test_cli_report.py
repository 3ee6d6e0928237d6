"""``azrun report`` after ``azrun run`` on the local Azure: one private, self-contained page that
carries every target and its whole output from the blobs."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from azrun.cli import main


def _data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="azrun-data">(.*?)</script>', page, re.S)
    assert found is not None
    return dict(json.loads(found.group(1)))


def test_report_of_the_latest_run(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    rc = main(["run", "--tag", "role=web", "--command", "seq 1 6000; echo bye >&2", "--max-errors", "5", "-q"])
    assert rc == 0
    capsys.readouterr()
    out = tmp_path / "reports" / "run.html"
    assert main(["report", "--html", str(out)]) == 0
    assert f"report written to {out}" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = _data(out.read_text(encoding="utf-8"))
    ran = [t for t in data["targets"] if t["state"] == "Succeeded"]
    assert len(ran) == 4 and data["counts"]["Skipped"] == 1
    for t in ran:
        # far past the ledger's 4 KB tail: the page holds the blob's whole text
        assert t["stdout"].splitlines()[-1] == "6000" and t["stdout"].count("\n") == 6000
        assert t["stderr"] == "bye\n" and t["output_note"] == ""


def test_report_of_an_unknown_run_says_so(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    assert main(["report", "20990101-0000-000000"]) != 0
    err = capsys.readouterr().err
    assert "20990101-0000-000000" in err and "Traceback" not in err


def test_run_report_file_masks_the_runs_secrets_and_shows_who_and_throttling(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    azure_env(local_azure)
    secret = "Rep0rt-Secret-77f1"
    monkeypatch.setenv("AZRUN_PARAM_TOKEN", secret)
    out = tmp_path / "ticket" / "change.html"
    rc = main(["run", "--tag", "role=web", "--protected-param", "TOKEN", "-q", "--report", str(out),
               "--command", 'echo "token is $TOKEN"; echo "again $TOKEN" >&2'])
    assert rc == 0
    assert f"report written to {out}" not in capsys.readouterr().err  # -q: no notes
    page = out.read_text(encoding="utf-8")
    assert secret not in page  # neither in the output nor the spec (fingerprints mask it)
    assert "secret_fingerprints" not in page and '"salt"' not in page  # no guess-testing material
    data = _data(page)
    ran = [t for t in data["targets"] if t["state"] == "Succeeded"]
    assert len(ran) == 4 and all("token is ***" in t["stdout"] and "again ***" in t["stderr"] for t in ran)
    assert data["driver"]["host"] == socket.gethostname() and data["driver"]["identity"]
    assert data["throttle"]["armRequests"] >= 12 and "bucketWaitS" in data["throttle"]  # PUT, GET, DELETE each
    assert data["throttle"]["throttled429"] == 0

    # the same page again, and its summary as JSON (global options apply to report)
    capsys.readouterr()
    assert main(["report", "last", "--html", str(tmp_path / "again.html"), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runId"] == data["run_id"] and doc["file"] == str(tmp_path / "again.html")
    assert doc["counts"] == {"Succeeded": 4, "Skipped": 1} and doc["bytes"] > 1000
    assert main(["report", data["run_id"][:15], "--html", str(tmp_path / "q.html"), "--query", "counts.Succeeded",
                 "-o", "tsv"]) == 0
    assert capsys.readouterr().out.strip() == "4"
