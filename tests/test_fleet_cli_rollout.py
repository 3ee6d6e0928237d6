"""``azrun run --waves`` and ``--retries`` end to end against a local Azure (the fleet's decisions
are tested on the fake in ``tests/fleet/``; these prove the flags, the ledger and the JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _fleet_support import executions, executions_per_machine, fleet_toml, run_command_ops

from azrun.cli import main
from azrun.ledger import Ledger
from azrun.runcommand import run_command_name

RUN = ["run", "--tag", "env=prod", "--output-mode", "summary", "-o", "json"]


def start(sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]], **fleet: Any) -> Any:
    sim = sim_factory(fleet_toml(**fleet))
    azure_env(sim)
    return sim


def test_waves_soak_and_stop_at_the_wave_over_its_budget(
    sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = start(sim_factory, azure_env, vms=5)
    script = 'case "$(hostname)" in vm-002) echo broken >&2; exit 3;; esac; echo fine'
    wave_flags = ["--waves", "1,2,100%", "--soak", "1s", "--wave-max-errors", "0"]
    assert main(["plan", "--tag", "env=prod", "-c", script, *wave_flags, "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(w["wave"], w["targets"], w.get("soakBeforeS")) for w in plan["waves"]] == [(1, 1, None), (2, 1, 1.0),
                                                                                        (3, 3, 1.0)]
    assert plan["waves"][2]["names"] == ["vm-003", "vm-004", "vm-005"] and plan["estimate"]["soakSeconds"] == 2

    assert main([*RUN, "-c", script, *wave_flags, "--max-errors", "10"]) == 1
    doc = json.loads(capsys.readouterr().out)
    by = {t["name"]: t for t in doc["targets"]}
    assert [by[f"vm-00{i}"]["wave"] for i in range(1, 6)] == [1, 2, 3, 3, 3]
    assert (by["vm-001"]["state"], by["vm-002"]["state"]) == ("Succeeded", "Failed")
    assert all(by[f"vm-00{i}"]["state"] == "Skipped" and "wave 2/3 exceeded its error budget" in by[f"vm-00{i}"]
               ["message"] for i in (3, 4, 5))
    assert sorted(m.rsplit("/", 1)[-1] for m in executions_per_machine(sim)) == ["vm-001", "vm-002"]
    puts = {r["path"].lower().split("/virtualmachines/")[1].split("/")[0]: r["ts"]
            for r in run_command_ops(sim) if r["method"] == "PUT"}
    assert puts["vm-002"] - puts["vm-001"] >= 1.0  # wave 1 ended, then a 1 s soak
    with Ledger.open(Path(doc["ledger"]).parent) as led:
        run = led.require_run(doc["runId"])
        assert run.options["fleet"]["waves"]["sizes"] == ["1", "2", "100%"]
        assert [t.wave for t in led.targets(run.id)] == [0, 1, 2, 2, 2]


@pytest.mark.slow
def test_retries_send_a_never_started_script_again_and_record_each_attempt(
    sim_factory: Callable[..., Any], azure_env: Callable[[Any], dict[str, str]], capsys: pytest.CaptureFixture[str],
) -> None:
    sim = start(sim_factory, azure_env, vms=1, start_delay_s=20)
    assert main([*RUN, "-c", "echo late", "--start-timeout", "1s", "--retries", "1"]) == 1
    doc = json.loads(capsys.readouterr().out)
    t = doc["targets"][0]
    assert t["state"] == "Undeliverable" and t["attempt"] == 2 and t["exitCode"] is None
    assert "never picked the script up within 1s" in t["message"] and "(attempt 2)" in t["message"]
    name = run_command_name(doc["runId"])
    puts = [r["path"].rsplit("/", 1)[-1].split("?")[0] for r in run_command_ops(sim) if r["method"] == "PUT"]
    assert puts == [name, f"{name}-2"]  # one new run command per attempt
    deletes = [r for r in run_command_ops(sim) if r["method"] == "DELETE"]
    assert len(deletes) >= 2 and all(r["status"] < 300 for r in deletes)
    assert executions(sim) == [] or all(e.get("killed") for e in executions(sim))
    with Ledger.open(Path(doc["ledger"]).parent) as led:
        row = led.targets(doc["runId"])[0]
        assert row.attempt == 2 and row.run_command_name == f"{name}-2"


@pytest.mark.parametrize("value", ["0", "0%"])
def test_zero_concurrency_is_refused_in_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tag", "env=prod", "-c", "true", "--max-concurrency", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: --max-concurrency {value}: nothing could ever run" and err[1].startswith("hint:")
