"""The CLI surface: an example in every command's --help, exit codes in ``azrun --help``, shell
completion, a fast ``--version`` that imports no SDK, and errors as one line unless ``--debug``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import azrun.cli as cli
from azrun import __version__


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "AZRUN_DEBUG")}
    env.update(extra)
    return env


def _azrun(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azrun", *args], capture_output=True, text=True, env=_env(**env), timeout=30
    )


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


ALL = list(_commands(typer.main.get_command(cli.app)))


def test_every_command_is_found() -> None:
    names = {" ".join(p) for p in ALL}
    expected = {
        "auth",
        "targets",
        "run",
        "status",
        "runs",
        "logs",
        "resume",
        "rerun",
        "cancel",
        "cleanup",
        "config",
        "config show",
        "sim",
        "sim up",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"azrun {' '.join(path)} --help has no example:\n{result.output}"
    assert f"azrun {path[0]}" in result.output  # the example runs this command


def test_root_help_documents_exit_codes_and_global_options() -> None:
    result = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    from azrun.cli._exit import MEANING

    for code, meaning in MEANING.items():  # the whole exit-code table, one line per code
        assert f"{int(code)} {' '.join(meaning.split())}" in text, code
    for option in ("--debug", "--no-color", "--only-show-errors", "--version", "--install-completion",
                   "--show-completion", "--query", "-o/--output"):
        assert option in text, option


def test_shell_completion_script_and_completions() -> None:
    shown = _azrun("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert shown.returncode == 0, shown.stderr
    assert (
        "complete -o default -F _azrun_completion azrun" in shown.stdout and "_AZRUN_COMPLETE" in shown.stdout
    )
    done = _azrun(_AZRUN_COMPLETE="complete_bash", COMP_WORDS="azrun ru", COMP_CWORD="1")
    assert set(done.stdout.split()) == {"run", "runs"}, done.stdout
    options = _azrun(_AZRUN_COMPLETE="complete_bash", COMP_WORDS="azrun run --max-c", COMP_CWORD="2")
    assert options.stdout.split() == ["--max-concurrency"]


def test_version_is_fast_and_imports_no_sdk() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, azrun.cli; print(sorted({m.split('.')[0] for m in sys.modules "
         "if m.startswith(('azure', 'rich', 'aiohttp', 'msal'))}))"],
        capture_output=True, text=True, env=_env(), timeout=30,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]", probe.stdout
    def best_of_3(*cmd: str) -> float:
        times = []
        for _ in range(3):
            start = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True, env=_env(), timeout=60)
            times.append(time.monotonic() - start)
        return min(times)

    version = _azrun("--version")
    assert version.stdout.strip() == f"azrun {__version__}"
    # azrun's own start-up over what it cannot avoid (the interpreter, typer, asyncio), best of three
    # on the same (possibly loaded) machine rather than an absolute figure: ~1.5x on a quiet one
    baseline = best_of_3(sys.executable, "-c", "import typer, asyncio")
    elapsed = best_of_3(sys.executable, "-m", "azrun", "--version")
    assert elapsed < 0.3 + 2.5 * baseline, (elapsed, baseline)


def test_errors_are_one_line_unless_debug(tmp_path: Any) -> None:
    plain = _azrun("run", "--all")
    assert plain.returncode == 2
    lines = plain.stderr.strip().splitlines()
    assert lines == ["error: no script given", lines[1]] and lines[1].startswith("hint: "), plain.stderr
    assert "Traceback" not in plain.stderr and "\x1b[" not in plain.stderr
    debug = _azrun("--debug", "run", "--all")
    assert debug.returncode == 1  # the exception escaped with its traceback
    assert "Traceback" in debug.stderr and "ConfigError: no script given" in debug.stderr
    also = _azrun("run", "--all", AZRUN_DEBUG="1")
    assert "Traceback" in also.stderr


def test_unexpected_errors_are_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(**_: Any) -> None:
        raise RuntimeError("kaboom sig=abc123secret")

    monkeypatch.setattr(cli, "app", boom)
    assert cli.main(["status"]) == 70  # a bug has its own exit code, never 1 (a target failed)
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected RuntimeError: kaboom") and "--debug" in err
    assert "abc123secret" not in err  # redacted like every error line
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "status"])


def test_no_color_flag_reaches_the_views_before_or_after_the_command() -> None:
    from azrun.cli._globals import current, with_global_options
    from azrun.cli._run_view import colors_disabled

    seen: dict[str, bool] = {}
    probe = typer.Typer()

    @probe.callback()
    def _root(no_color: bool = typer.Option(False, "--no-color")) -> None:
        pass

    def show() -> None:
        seen["flag"] = current().no_color
        seen["disabled"] = colors_disabled()

    probe.command("show")(with_global_options(show))
    assert CliRunner().invoke(probe, ["--no-color", "show"], env={"NO_COLOR": None}).exit_code == 0
    assert seen == {"flag": True, "disabled": True}
    assert CliRunner().invoke(probe, ["show", "--no-color"], env={"NO_COLOR": None}).exit_code == 0
    assert seen == {"flag": True, "disabled": True}
    assert CliRunner().invoke(probe, ["show"], env={"NO_COLOR": None}).exit_code == 0
    assert seen == {"flag": False, "disabled": False}
    assert CliRunner().invoke(probe, ["show"], env={"NO_COLOR": "1"}).exit_code == 0
    assert seen == {"flag": False, "disabled": True}
    assert not current().no_color  # outside a command
