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
    assert report["configFile"] == str(path)
    assert report["configFileExists"] is True
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
    assert report["configFile"] == str(other)
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


# -- one resolution: flags > environment > config file > defaults, for every setting -------------------
from azrun.config import (  # noqa: E402
    DEFAULT_TIMEOUT_S,
    KEYS,
    MAX_TIMEOUT_S,
    SETTINGS,
    Settings,
    parse_duration,
    parse_timeout,
)
from azrun.errors import ConfigError  # noqa: E402

# key -> (file value, env value, flag value, parsed flag value)
_LAYERS: dict[str, tuple[Any, str, Any, Any]] = {
    "subscription": ("sub-file", "sub-env", ["sub-flag"], ("sub-flag",)),
    "output_container": ("https://f.blob.core.windows.net/c", "https://e.blob.core.windows.net/c",
                         "https://x.blob.core.windows.net/c", "https://x.blob.core.windows.net/c"),
    "storage_account": ("fileacct", "envacct", "flagacct", "flagacct"),
    "storage_connection_string": ("AccountName=f;AccountKey=k", "AccountName=e;AccountKey=k",
                                  "AccountName=x;AccountKey=k", "AccountName=x;AccountKey=k"),
    "max_concurrency": (20, "30%", "7", "7"),
    "max_errors": ("3", "5", "10%", "10%"),
    "timeout": ("5m", "10m", "90s", 90),
    "auth": ("cli", "msi", "env", "env"),
    "client_id": ("cid-file", "cid-env", "cid-flag", "cid-flag"),
    "object_id": ("oid-file", "oid-env", "oid-flag", "oid-flag"),
    "identity_resource_id": ("/rid/file", "/rid/env", "/rid/flag", "/rid/flag"),
    "blob_identity": ("system", "cid-env", "cid-flag", "cid-flag"),
    "state_dir": ("/tmp/azrun-file", "/tmp/azrun-env", "/tmp/azrun-flag", "/tmp/azrun-flag"),
    "throttle": ("off", "on", "off", "off"),
    "durable_endpoint": ("https://f.durabletask.io", "127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4002"),
    "durable_taskhub": ("hub-file", "hub-env", "hub-flag", "hub-flag"),
    "engine": ("durable", "local", "DURABLE", "durable"),
}


def test_every_setting_has_a_precedence_case() -> None:
    assert set(_LAYERS) == set(KEYS)


def _toml(key: str, value: Any) -> str:
    return f"{key} = {value}\n" if isinstance(value, int) else f'{key} = "{value}"\n'


@pytest.mark.parametrize("key", sorted(_LAYERS))
def test_precedence_per_setting(key: str, tmp_path: Path) -> None:
    file_value, env_value, flag_value, parsed_flag = _LAYERS[key]
    cfg = tmp_path / "c.toml"
    var = KEYS[key][0]
    assert Settings.load(environ={}, path=cfg).source(key) == "default"
    cfg.write_text(_toml(key, file_value), encoding="utf-8")
    assert Settings.load(environ={}, path=cfg).source(key) == "config"
    env = {var: env_value}
    from_env = Settings.load(environ=env, path=cfg)
    assert from_env.source(key) == "env"
    assert from_env.get(key) != Settings.load(environ={}, path=cfg).get(key)
    flagged = Settings.load(environ=env, path=cfg, flags={key: flag_value})
    assert (flagged.source(key), flagged.get(key)) == ("flag", parsed_flag)


def test_storage_account_flag_beats_output_container_from_the_environment(tmp_path: Path) -> None:
    env = {"AZRUN_OUTPUT_CONTAINER": "https://envacct.blob.core.windows.net/env-container"}
    s = Settings.load(environ=env, path=tmp_path / "none.toml", flags={"storage_account": "flagacct"})
    choice = s.output()
    assert choice is not None and choice.container_url is None
    assert choice.url("blob.core.windows.net") == "https://flagacct.blob.core.windows.net/azrun-output"
    # and the environment's storage account loses to a container in a flag
    env = {"AZRUN_STORAGE_ACCOUNT": "envacct"}
    s = Settings.load(environ=env, path=tmp_path / "none.toml",
                      flags={"output_container": "https://flag.blob.core.windows.net/mine"})
    assert s.output() is not None and s.output().url("x") == "https://flag.blob.core.windows.net/mine"  # type: ignore[union-attr]


def test_identity_is_one_choice_across_layers(tmp_path: Path) -> None:
    s = Settings.load(environ={"AZRUN_CLIENT_ID": "env-cid"}, path=tmp_path / "n.toml", flags={"object_id": "flag-oid"})
    ident = s.identity()
    assert ident is not None and (ident.client_id, ident.object_id) == (None, "flag-oid")


def test_azure_client_id_is_the_identity_unless_it_is_a_service_principal(tmp_path: Path) -> None:
    cfg = tmp_path / "n.toml"
    s = Settings.load(environ={"AZURE_CLIENT_ID": "uami"}, path=cfg)
    assert s.identity() is not None and s.identity().client_id == "uami"  # type: ignore[union-attr]
    both = Settings.load(environ={"AZURE_CLIENT_ID": "uami", "AZRUN_CLIENT_ID": "mine"}, path=cfg)
    assert both.get("client_id") == "mine"
    sp = Settings.load(environ={"AZURE_CLIENT_ID": "app", "AZURE_CLIENT_SECRET": "x", "AZURE_TENANT_ID": "t"}, path=cfg)
    assert sp.identity() is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2h", 7200), ("1d", 86400), (600, 600)]
)
def test_one_duration_parser(text: Any, seconds: int, tmp_path: Path) -> None:
    assert parse_duration(text, what="x") == seconds
    cfg = tmp_path / "c.toml"
    cfg.write_text(_toml("timeout", text), encoding="utf-8")
    assert Settings.load(environ={}, path=cfg).timeout_s() == seconds
    assert Settings.load(environ={"AZRUN_TIMEOUT": str(text)}, path=tmp_path / "n.toml").timeout_s() == seconds
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize(("text", "says"), [
    ("0", "must be positive"), ("0s", "must be positive"), ("0.5s", "whole seconds"),
    ("30d", "largest honest timeout, 6d"), ("7d", "largest honest timeout"), ("soon", "not a duration"),
])  # fmt: skip
def test_dishonest_timeouts_are_refused(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_timeout(text, what="--timeout")
    assert says in err.value.message and err.value.hint
    if "honest" in says:
        assert "7 days" in err.value.message


def test_largest_timeout_fits_the_sas() -> None:
    from azrun.output import MAX_SAS_LIFETIME_S

    assert parse_timeout("6d") == MAX_TIMEOUT_S
    assert MAX_TIMEOUT_S + max(60, MAX_TIMEOUT_S // 10) + 3600 <= MAX_SAS_LIFETIME_S
    assert DEFAULT_TIMEOUT_S == 3600


def test_bad_values_name_their_layer(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('timeout = "0"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"timeout in .*c\.toml"):
        Settings.load(environ={}, path=cfg)
    with pytest.raises(ConfigError, match="AZRUN_MAX_CONCURRENCY"):
        Settings.load(environ={"AZRUN_MAX_CONCURRENCY": "0%"}, path=tmp_path / "n.toml")
    with pytest.raises(ConfigError, match="--max-concurrency"):
        Settings.load(environ={}, path=tmp_path / "n.toml", flags={"max_concurrency": "0"})


def test_defaults_are_written_once() -> None:
    import azrun.config as config

    table = {key.name: key.default for key in SETTINGS}
    assert table["max_concurrency"] == config.DEFAULT_MAX_CONCURRENCY == "50"
    assert table["timeout"] == config.DEFAULT_TIMEOUT_S
    root = Path(__file__).resolve().parents[1] / "azrun"
    literal = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if "sim" not in p.parts and p.name != "config.py"
        and any(pat in p.read_text(encoding="utf-8") for pat in ('"timeout_s", 3600', "or 3600", 'or "50"'))
    ]  # fmt: skip
    assert literal == []


@pytest.mark.parametrize("args", [["--timeout", "0"], ["--timeout", "0.5s"], ["--timeout", "30d"],
                                  ["--max-concurrency", "0"], ["--max-concurrency", "0%"]])
def test_run_refuses_before_anything_is_sent(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tag", "role=web", "--command", "true", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "hint:" in err and "Traceback" not in err


def test_timeout_from_the_environment_reaches_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from azrun.cli._run_inputs import load_settings, run_timeout_s

    monkeypatch.setenv("AZRUN_TIMEOUT", "5m")
    settings = load_settings()
    assert run_timeout_s(None, None, settings) == 300
    assert run_timeout_s("2m", None, settings) == 120
    assert run_timeout_s(None, 1800, settings) == 1800
    with pytest.raises(ConfigError):
        run_timeout_s(None, 30 * 86400, settings)


def test_fleet_from_env_gets_what_the_cli_gets(tmp_path: Path) -> None:
    from azrun.cli._run_inputs import fleet_options
    from azrun.fleet import Fleet

    env = {
        "AZRUN_OUTPUT_CONTAINER": "https://acct.blob.core.windows.net/out", "AZRUN_CLIENT_ID": "cid",
        "AZRUN_AUTH": "msi", "AZRUN_BLOB_IDENTITY": "system", "AZRUN_STATE_DIR": str(tmp_path / "st"),
        "AZRUN_MAX_CONCURRENCY": "7", "AZRUN_MAX_ERRORS": "2", "AZRUN_TIMEOUT": "5m",
        "AZURE_SUBSCRIPTION_ID": "s1,s2", "AZRUN_CONFIG": str(tmp_path / "none.toml"),
    }  # fmt: skip
    fleet = Fleet.from_env(env)
    settings = Settings.load(environ=env)
    assert fleet.factory.identity is not None and fleet.factory.identity.client_id == "cid"
    assert fleet.factory.auth_mode == "msi"
    assert fleet._output_choice == settings.output()
    assert fleet._output_choice is not None and fleet._output_choice.blob_identity == "system"
    assert fleet._state_dir == tmp_path / "st"
    assert fleet.default_subscriptions == ("s1", "s2")
    assert (fleet.defaults.max_concurrency, fleet.defaults.max_errors, fleet.defaults.timeout_s) == ("7", "2", 300)
    opts = fleet_options(settings, None, None, 0, False, None)
    assert (str(opts.max_concurrency), str(opts.max_errors)) == ("7", "2")
