"""``azrun config show``: values and their sources, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from azrun.cli import main


def _write_config(tmp_path: Path, text: str) -> Path:
    # tests/conftest.py points XDG_CONFIG_HOME at tmp_path / "config".
    path = tmp_path / "config" / "azrun" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _show_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["config", "show", "-o", "json", *args]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _rows(report: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    return {row["key"]: (row["value"], row["source"]) for row in report["settings"]}


def test_each_layer_overrides_the_one_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_config(tmp_path, 'max_concurrency = 20\nmax_errors = "3"\ntimeout = 600\nauth = "msi"\n')
    monkeypatch.setenv("AZRUN_MAX_ERRORS", "5")
    monkeypatch.setenv("AZRUN_TIMEOUT", "900")
    report = _show_json(capsys, "--set", "timeout=60")
    rows = _rows(report)
    assert report["config_file"] == str(path)
    assert report["config_file_exists"] is True
    assert rows["max_concurrency"] == ("20", "config")
    assert rows["max_errors"] == ("5", "env")
    assert rows["timeout"] == ("60", "flag")
    assert rows["auth"] == ("msi", "config")
    assert rows["throttle"] == ("on", "default")
    assert rows["client_id"] == (None, "default")


def test_table_names_the_file_and_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(tmp_path, 'subscription = "11111111-2222-3333-4444-555555555555"\n')
    monkeypatch.setenv("AZRUN_MAX_CONCURRENCY", "7")
    assert main(["config", "show", "--set", "max-errors=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("config file: ") and out[0].endswith("config.toml")
    assert out[2].split() == ["KEY", "VALUE", "SOURCE", "VARIABLE"]
    table = {line.split()[0]: line.split()[1:] for line in out[3:]}
    assert table["subscription"] == [
        "11111111-2222-3333-4444-555555555555",
        "config",
        "AZURE_SUBSCRIPTION_ID",
    ]
    assert table["max_concurrency"] == ["7", "env", "AZRUN_MAX_CONCURRENCY"]
    assert table["max_errors"] == ["2", "flag", "AZRUN_MAX_ERRORS"]
    assert table["client_id"] == ["-", "default", "AZRUN_CLIENT_ID"]


def test_missing_config_file_is_reported_not_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("config.toml (not found)")


def test_explicit_config_path_and_azrun_config_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('max_errors = "9"\n', encoding="utf-8")
    assert _rows(_show_json(capsys, "--config", str(other)))["max_errors"] == ("9", "config")
    monkeypatch.setenv("AZRUN_CONFIG", str(other))
    report = _show_json(capsys)
    assert report["config_file"] == str(other)
    assert _rows(report)["max_errors"] == ("9", "config")


def test_secrets_never_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "c2VjcmV0LWFjY291bnQta2V5LXZhbHVlLTEyMzQ1Njc4OTA="
    monkeypatch.setenv(
        "AZRUN_STORAGE_CONNECTION_STRING", f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={key}"
    )
    sas_url = (
        "https://acct.blob.core.windows.net/azrun-output?sv=2024-08-04&sp=racw&sig=AbCdEf0123456789%2Bxyz%3D"
    )
    _write_config(tmp_path, f'output_container = "{sas_url}"\n')
    for args in (["config", "show"], ["config", "show", "-o", "json"]):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert key not in out
        assert "AbCdEf0123456789" not in out
        assert "(set)" in out
        assert "https://acct.blob.core.windows.net/azrun-output" in out


def test_unknown_flag_key_suggests_the_right_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "maxconcurrency=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'maxconcurrency' (did you mean 'max_concurrency'?)" in err
    assert "hint:" in err


def test_malformed_set_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "timeout"]) == 2
    assert "is not NAME=VALUE" in capsys.readouterr().err


def test_bad_config_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_config(tmp_path, "max_concurency = 3\n")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s)" in err and "max_concurency" in err
