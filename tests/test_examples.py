"""The examples (Function App job, Automation runbook) against the local Azure.

They are written against azrun's public pieces (Settings, ClientFactory, OutputStore, Fleet,
Selector, RunSpec); running them here keeps their signatures honest. ``function_app.py`` itself
needs ``azure-functions`` and is only checked to compile.
"""

from __future__ import annotations

import importlib.util
import json
import py_compile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_function_app_compiles() -> None:
    py_compile.compile(str(EXAMPLES / "functions" / "function_app.py"), doraise=True)
    settings = json.loads((EXAMPLES / "functions" / "local.settings.json.example").read_text())
    assert settings["Values"]["AZRUN_STATE_DIR"]
    assert "azrun" in (EXAMPLES / "functions" / "requirements.txt").read_text()


async def test_function_job_runs_on_tagged_machines(local_azure: Any, azure_env: Any) -> None:
    azure_env(local_azure)
    job = _load(EXAMPLES / "functions" / "azrun_job.py", "azrun_job_example")
    result = await job.run_on_tag("role=web", 'echo "hello from $azrun_example"', timeout_s=60)
    summary = job.summarize(result)
    assert summary["counts"] == {"Succeeded": 4, "Skipped": 1}
    succeeded = [t for t in summary["targets"] if t["state"] == "Succeeded"]
    assert sorted(t["name"] for t in succeeded) == [f"vm-web-0{i}" for i in range(1, 5)]
    for target in succeeded:
        assert target["exit_code"] == 0
        assert "hello from" in target["stdout_tail"]
        assert target["stdout_url"] and "sig=" not in target["stdout_url"]
    json.dumps(summary)  # what the HTTP trigger returns must serialise


def test_runbook_main_prints_one_line_per_machine(
    local_azure: Any, azure_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    runbook = _load(EXAMPLES / "automation" / "runbook.py", "azrun_runbook_example")
    assert runbook.automation_settings() == {}  # no automationassets outside Automation
    rc = runbook.main(["--tag", "role=web", "--command", "echo runbook-ok", "--timeout", "60"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    machines = [line for line in lines if "machine" in line]
    assert sorted(m["machine"] for m in machines if m["state"] == "Succeeded") == [
        f"vm-web-0{i}" for i in range(1, 5)
    ]
    assert all("runbook-ok" in m["tail"] for m in machines if m["state"] == "Succeeded")
    assert lines[-1]["ok"] is True and lines[-1]["counts"]["Succeeded"] == 4


def test_runbook_reports_config_errors_with_a_hint(
    local_azure: Any, azure_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    azure_env(local_azure)
    runbook = _load(EXAMPLES / "automation" / "runbook.py", "azrun_runbook_example_err")
    assert runbook.main(["--tag", "=broken", "--command", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint: " in err
