"""az's output conventions on every command that prints data: ``-o json`` is ONE document,
``jsonl`` one value per line, ``yaml``/``tsv``/``jsonc``/``table``, ``--query`` (JMESPath), the
global flags accepted after the command too, and camelCase keys everywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from azrun.cli._format import OutputFormat, apply_query, camel_keys, emit, to_tsv, to_yaml
from azrun.errors import ConfigError

SNAKE = re.compile(r'"[a-z]+_[a-z_]+"\s*:')


def _azrun(sim: Any, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_"))}
    env.update(sim.env)
    env["AZRUN_STATE_DIR"] = str(state)
    env["AZRUN_RUNTIME_DIR"] = str(state / "runtime")
    return subprocess.run(
        [sys.executable, "-m", "azrun", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _no_snake_keys(text: str) -> None:
    assert not SNAKE.search(text), SNAKE.search(text)


def test_formats_and_query_in_process() -> None:
    import io

    data = camel_keys([{"name": "vm-1", "exit_code": 0, "tags": {"patch_group": "a"}},
                       {"name": "vm 2", "exit_code": None, "tags": {}}])
    assert data[0] == {"name": "vm-1", "exitCode": 0, "tags": {"patch_group": "a"}}  # user data keeps its keys

    def out(fmt: OutputFormat, query: str | None = None) -> str:
        buf = io.StringIO()
        emit(data, fmt, buf, query=query)
        return buf.getvalue()

    assert json.loads(out(OutputFormat.JSON)) == data  # one document
    assert [json.loads(line) for line in out(OutputFormat.JSONL).splitlines()] == data
    assert out(OutputFormat.TSV) == 'vm-1\t0\t{"patch_group":"a"}\nvm 2\t\t{}\n'
    assert out(OutputFormat.JSON, "[?exitCode==`0`].name") == '[\n  "vm-1"\n]\n'
    assert out(OutputFormat.TSV, "[].name") == "vm-1\nvm 2\n"
    assert out(OutputFormat.TABLE, "[].{Name: name, Exit: exitCode}").splitlines() == [
        "Name  Exit", "----  ----", "vm-1  0", "vm 2",
    ]
    assert to_yaml(data) == (
        "- name: vm-1\n  exitCode: 0\n  tags:\n    patch_group: a\n"
        "- name: vm 2\n  exitCode: null\n  tags: {}\n"
    )
    assert to_yaml({"a": "yes", "b": "x: y", "c": [1, "2"]}) == 'a: "yes"\nb: "x: y"\nc:\n- 1\n- "2"\n'
    assert to_tsv({"a": True, "b": "t\tx"}) == "True\tt x\n"
    with pytest.raises(ConfigError, match="not a valid JMESPath"):
        apply_query(data, "[?")


def test_output_and_query_on_every_data_command(local_azure: Any, tmp_path: Path) -> None:
    auth = _azrun(local_azure, tmp_path, "auth", "-o", "json")
    assert auth.returncode == 0, auth.stderr
    assert json.loads(auth.stdout)["authMode"] == "msi"
    _no_snake_keys(auth.stdout)
    check = _azrun(local_azure, tmp_path, "auth", "check", "--query", "authMode", "-o", "tsv")
    assert check.returncode == 0 and check.stdout == "msi\n", check.stderr  # the command hints name exists

    targets = _azrun(local_azure, tmp_path, "targets", "--name", "vm-web-0*", "-o", "json")
    assert targets.returncode == 0, targets.stderr
    names = sorted(t["name"] for t in json.loads(targets.stdout) if t["status"] == "selected")
    assert names and all(n.startswith("vm-web-0") for n in names)
    yaml = _azrun(local_azure, tmp_path, "targets", "--name", "vm-web-01", "-o", "yaml", "--query", "[].name")
    assert yaml.stdout == "- vm-web-01\n", yaml.stderr

    # run -o json: ONE document on stdout (live lines go to stderr), keys in camelCase
    run = _azrun(local_azure, tmp_path, "run", "--name", "vm-web-01", "-c", "echo hi", "-o", "json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["exitCode"] == 0 and doc["status"] == "succeeded" and doc["counts"]["Succeeded"] == 1
    assert [(t["name"], t["state"], t["exitCode"]) for t in doc["targets"]] == [("vm-web-01", "Succeeded", 0)]
    assert doc["runId"] and doc["ledger"] and doc["targets"][0]["startedAt"]
    assert "hi" in run.stderr  # the live output line, kept off stdout
    _no_snake_keys(run.stdout)

    # -o jsonl: one record per target as each finishes
    many = _azrun(local_azure, tmp_path, "run", "--name", "vm-web-0*", "--os", "linux", "-c", "true", "-o", "jsonl",
                  "-q")
    assert many.returncode == 0, many.stderr
    records = [json.loads(line) for line in many.stdout.splitlines()]
    assert sorted(r["name"] for r in records) == names and all(r["state"] == "Succeeded" for r in records)

    runs = _azrun(local_azure, tmp_path, "runs", "-o", "json")
    assert runs.returncode == 0, runs.stderr
    listed = json.loads(runs.stdout)
    assert [r["runId"] for r in listed][1] == doc["runId"] and listed[0]["status"] == "succeeded"
    _no_snake_keys(runs.stdout)

    # global flags after the command too
    status = _azrun(local_azure, tmp_path, "status", doc["runId"], "--output", "json", "--no-color", "-q")
    assert status.returncode == 0, status.stderr
    assert [(t["name"], t["state"]) for t in json.loads(status.stdout)["targets"]] == [("vm-web-01", "Succeeded")]
    assert "\x1b[" not in status.stdout
    jsonc = _azrun(local_azure, tmp_path, "status", "last", "-o", "jsonc", "--query", "counts")
    assert json.loads(jsonc.stdout)["total"] == len(names)  # no colour when piped

    plan = _azrun(local_azure, tmp_path, "plan", "--name", "vm-web-01", "-c", "true", "-o", "json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["dispatch"] is False

    config = _azrun(local_azure, tmp_path, "config", "show", "-o", "json", "--no-color", "-q")
    assert config.returncode == 0, config.stderr
    assert {"configFile", "configFileExists", "settings"} <= set(json.loads(config.stdout))
    _no_snake_keys(config.stdout)
    tsv = _azrun(local_azure, tmp_path, "config", "show", "--query", "settings[?key=='max_concurrency'].source", "-o", "tsv")
    assert tsv.stdout.strip() in ("default", "env", "config"), tsv.stderr

    report = _azrun(local_azure, tmp_path, "report", "last", "--html", str(tmp_path / "r.html"), "-o", "json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["file"] == str(tmp_path / "r.html")
    _no_snake_keys(report.stdout)

    cleanup = _azrun(local_azure, tmp_path, "cleanup", "--older-than", "0s", "--dry-run", "-o", "json",
                     "--only-show-errors")
    assert cleanup.returncode == 0, cleanup.stderr
    assert json.loads(cleanup.stdout)["dryRun"] is True and cleanup.stderr == ""


DATA_COMMANDS = ["auth", "auth check", "targets", "run", "plan", "status", "runs", "cancel", "cleanup", "logs",
                 "resume", "rerun", "report", "config show", "durable run", "durable status", "durable runs"]
#: Commands that print no data document: servers in the foreground and a line or a stream.
QUIET_COMMANDS = ["worker", "durable cancel", "durable logs", "durable scheduler"]


def test_the_data_command_list_is_complete() -> None:
    """Every command but ``sim up`` and the quiet ones prints data: all are listed."""
    import typer

    import azrun.cli as cli

    found = []
    for name, cmd in typer.main.get_command(cli.app).commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        if getattr(cmd, "callback", None) is not None and name != "sim":
            found.append(name)
        found += [f"{name} {sub}" for sub in (subs or {}) if name != "sim"]
    assert sorted(found) == sorted(DATA_COMMANDS + QUIET_COMMANDS)


@pytest.mark.parametrize("command", QUIET_COMMANDS)
def test_quiet_commands_take_the_global_options_but_no_output_format(command: str) -> None:
    import typer

    import azrun.cli as cli

    cmd = typer.main.get_command(cli.app)
    for part in command.split():
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    opts = {o for p in cmd.params for o in p.opts}
    assert {"--only-show-errors", "-q", "-v", "--no-color", "--debug"} <= opts
    assert not {"-o", "--query"} & opts


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_every_data_command_declares_the_global_options(command: str) -> None:
    import typer

    import azrun.cli as cli

    cmd = typer.main.get_command(cli.app)
    for part in command.split():
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    opts = {o for p in cmd.params for o in p.opts}
    assert {"-o", "--output", "--query", "--only-show-errors", "-q", "-v", "--no-color", "--debug"} <= opts
