"""The library runs on Windows too (Automation sandboxes, Windows hybrid workers), with one code path.

* No module of the library imports a POSIX-only module (``fcntl``, ``pwd``, ...) outside an
  ``if``/``try`` guard; ``azrun/sim`` (the local Azure, a Linux developer tool) is exempt.
* Machine-wide IMDS pacing goes through ``filelock`` (fcntl on POSIX, msvcrt on Windows): the
  path tested here is the one Windows runs, and its locks are OS locks, dropped when the holder
  dies (a killed process never keeps a slot).
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

from azrun.auth._pacing import FileLimiter

ROOT = Path(__file__).resolve().parents[1] / "azrun"
POSIX_ONLY = {"fcntl", "pwd", "grp", "termios", "tty", "pty", "resource", "posix", "syslog", "crypt"}


def _unguarded_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [a.name.split(".")[0] for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module.split(".")[0]]
            else:
                visit(child, guarded or isinstance(child, ast.If | ast.Try))
                continue
            found.extend(f"{path.relative_to(ROOT.parent)}:{child.lineno} {n}" for n in names
                         if n in POSIX_ONLY and not guarded)  # fmt: skip

    visit(tree, False)
    return found


def test_no_posix_only_module_is_imported_unguarded() -> None:
    files = [p for p in ROOT.rglob("*.py") if "sim" not in p.relative_to(ROOT).parts[:1]]
    assert len(files) > 100  # the walk sees the library
    bad = [hit for path in files for hit in _unguarded_imports(path)]
    assert bad == [], f"POSIX-only imports without a guard: {bad}"
    # the check can fail: the local Azure (exempt) has one
    assert _unguarded_imports(ROOT / "sim" / "agent_process.py") != []


def test_pacing_uses_the_portable_lock_library_on_every_platform() -> None:
    import inspect

    from azrun.auth._pacing import Pacer

    source = (ROOT / "auth" / "_pacing.py").read_text(encoding="utf-8")
    assert "import filelock" in source and "import fcntl" not in source
    assert "platform" not in inspect.getsource(Pacer.from_config)  # machine-wide on Windows too


HOLD = """
import sys, time
from pathlib import Path
from azrun.auth._pacing import FileLimiter
limiter = FileLimiter(Path(sys.argv[1]), rate_per_s=20, burst=5, concurrency=1)
with limiter.slot():
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_never_keeps_its_slot(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        limiter = FileLimiter(tmp_path, rate_per_s=20, burst=5, concurrency=1, poll_s=0.001)
        assert limiter._try_lock(tmp_path / "imds-slot-0.lock") is None  # the only slot is taken
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with limiter.slot() as index:  # the OS dropped the dead process's lock
            assert index == 0
        assert time.monotonic() - started < 2
    finally:
        if holder.poll() is None:
            holder.kill()
