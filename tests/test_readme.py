"""Every documented example in README.md runs against the local Azure, so the docs cannot rot.

``console`` blocks: each ``$ azrun ...`` line is run in a shell with the simulator's env and must
exit 0. ``python`` blocks that import azrun are executed the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README.read_text(encoding="utf-8")) if kind == lang]


def _console_commands() -> list[str]:
    commands = []
    for body in _blocks("console"):
        for line in body.splitlines():
            if line.startswith("$ azrun "):
                commands.append(line[2:].split("  #", 1)[0].strip())
    return commands


def _python_examples() -> list[str]:
    return [body for body in _blocks("python") if "import azrun" in body]


@pytest.fixture(scope="module")
def demo_azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from azrun.sim.launcher import SimProcess

    sim = SimProcess(None, workdir=tmp_path_factory.mktemp("readme-azure"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _env(sim: Any, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_", "IDENTITY_", "MSI_"))}
    env.update(sim.env)
    env["AZRUN_STATE_DIR"] = str(state)
    env["AZRUN_RUNTIME_DIR"] = str(state / "runtime")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_readme_has_examples() -> None:
    assert len(_console_commands()) >= 4
    assert _python_examples()


def test_readme_console_examples_run(demo_azure: Any, tmp_path: Path) -> None:
    env = _env(demo_azure, tmp_path / "state")
    for command in _console_commands():
        proc = subprocess.run(
            command, shell=True, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"{command!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, command


def test_readme_python_examples_run(demo_azure: Any, tmp_path: Path) -> None:
    env = _env(demo_azure, tmp_path / "state")
    for source in _python_examples():
        proc = subprocess.run(
            [sys.executable, "-c", source], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, f"example failed:\n{source}\n{proc.stdout}\n{proc.stderr}"
        assert "Succeeded" in proc.stdout, proc.stdout


# -- the README's option lists and tables, checked against the real CLI ---------------------------------
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(name)} -->\n(.*?)<!-- /", text, re.S)
    assert found, f"README has no <!-- {name} --> section"
    return found.group(1)


def _cli_options(*path: str) -> set[str]:
    import typer

    import azrun.cli as cli

    cmd: Any = typer.main.get_command(cli.app)
    for name in path:
        cmd = cmd.commands[name]
    return {o for p in cmd.params if not getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)
            if o.startswith("-")} - {"--help", "-h"}


def _global_options() -> set[str]:
    return {"-o", "--output", "--query", "--only-show-errors", "-q", "--quiet", "-v", "--verbose", "--no-color",
            "--debug"}


def test_readme_global_options_are_the_cli_s() -> None:
    documented = set(FLAG.findall(_section("options:global").replace("/", " ")))
    assert documented == _global_options()
    for command in ("run", "status", "targets", "plan", "runs"):
        assert _global_options() <= _cli_options(command), command


def test_readme_run_options_are_the_cli_s() -> None:
    documented = set(FLAG.findall(_section("options:run").replace("/", " ")))
    real = _cli_options("run") - _global_options()
    assert documented == real, {"undocumented": real - documented, "not in the CLI": documented - real}


def test_readme_command_table_is_the_cli_s() -> None:
    import typer

    import azrun.cli as cli

    rows = re.findall(r"^\| `azrun ([a-z]+)(?: ([a-z]+))?", _section("commands"), re.M)
    documented = {name for name, _ in rows}
    root: Any = typer.main.get_command(cli.app)
    assert documented == set(root.commands), documented ^ set(root.commands)
    for name, sub in rows:
        if sub:
            assert sub in root.commands[name].commands, f"azrun {name} {sub}"


def test_readme_exit_codes_are_the_cli_s() -> None:
    from azrun.cli._exit import MEANING

    rows = re.findall(r"^\| (\d+) \| (.*) \|$", _section("exit-codes"), re.M)
    assert [(int(code), text) for code, text in rows] == [(int(c), m) for c, m in MEANING.items()]
