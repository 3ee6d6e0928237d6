"""azrun as a real package: ``python -m build`` makes an sdist and a wheel, and the wheel installed
into a fresh venv (Python 3.10, Azure Automation's runtime, and 3.11) gives a working ``azrun``
command and library, checked against the local Azure.

The fresh venvs install the wheel's dependencies through pip's ordinary configuration (the
package index); nothing of this checkout is on their path. The wheel's size and each install's
time are printed (``pytest -s tests/test_package.py``) for the record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import azrun

ROOT = Path(__file__).resolve().parents[1]
INTERPRETERS = {"3.11": ROOT / ".venv" / "bin" / "python", "3.10": ROOT / ".venv310" / "bin" / "python"}

LIBRARY_CALL = """
import asyncio, json, sys
import azrun

async def main() -> None:
    async with azrun.Fleet.from_env() as fleet:
        result = await fleet.run(azrun.Selector.from_options(tags=["role=web"]),
                                 azrun.RunSpec(script="echo packaged-$((20 + 22))", timeout_s=60))
    print(json.dumps({"file": azrun.__file__, "python": list(sys.version_info[:2]),
                      "counts": result.counts(), "tails": [r.stdout_tail for r in result.succeeded]}))

asyncio.run(main())
"""


def _build(out: Path, *kinds: str) -> list[Path]:
    proc = subprocess.run([sys.executable, "-m", "build", *kinds, "--outdir", str(out), str(ROOT)], cwd=out,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "License classifiers are deprecated" not in proc.stdout + proc.stderr
    assert "project.license` as a TOML table is deprecated" not in proc.stdout + proc.stderr
    return sorted(out.iterdir())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    built = _build(out, "--wheel")
    wheels = [p for p in built if p.suffix == ".whl"]
    assert len(wheels) == 1, built
    print(f"\nwheel {wheels[0].name}: {wheels[0].stat().st_size / 1024:.0f} KiB")
    yield wheels[0]


def test_the_wheel_holds_the_package_its_data_and_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "azrun/py.typed" in names  # typed for mypy users
    assert "azrun/report/template.html" in names and "azrun/sim/fleets/demo.toml" in names
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "examples/", "scripts/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(f"azrun-{azrun.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in meta and "Requires-Python: >=3.10" in meta


@pytest.mark.slow
def test_build_makes_an_sdist_too(tmp_path: Path) -> None:
    built = _build(tmp_path, "--sdist")
    assert [p.name for p in built] == [f"azrun-{azrun.__version__}.tar.gz"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", sorted(INTERPRETERS))
def test_the_wheel_installs_and_runs_on(version: str, wheel: Path, local_azure: Any, tmp_path: Path) -> None:
    base = INTERPRETERS[version]
    if not base.exists():
        if os.environ.get("AZRUN_SKIP_PY310") == "1":
            pytest.skip(f"{base} is missing and AZRUN_SKIP_PY310=1")
        pytest.fail(f"{base} is missing: run ./scripts/setup (it makes .venv and .venv310)")
    venv = tmp_path / "venv"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, timeout=120)
    py, exe = venv / "bin" / "python", venv / "bin" / "azrun"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZRUN_", "AZURE_", "PYTHON", "VIRTUAL_ENV", "PYTEST_"))}  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, timeout=800, env=env, cwd=tmp_path, check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\nPython {version}: pip install {wheel.name} (with its dependencies) took {elapsed:.1f} s")

    version_out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path,
                                 timeout=60, check=False)  # fmt: skip
    assert version_out.returncode == 0 and azrun.__version__ in version_out.stdout, version_out

    run_env = {**env, **local_azure.env, "AZRUN_STATE_DIR": str(tmp_path / "state"),
               "AZRUN_RUNTIME_DIR": str(tmp_path / "runtime")}  # fmt: skip
    call = subprocess.run([str(py), "-c", LIBRARY_CALL], capture_output=True, text=True, env=run_env,
                          cwd=tmp_path, timeout=300, check=False)  # fmt: skip
    assert call.returncode == 0, call.stderr[-3000:]
    out = json.loads(call.stdout.strip().splitlines()[-1])
    assert out["python"] == [int(p) for p in version.split(".")]
    assert out["file"].startswith(str(venv)), out["file"]  # the installed wheel, not this checkout
    assert out["counts"] == {"Succeeded": 4, "Skipped": 1}
    assert all("packaged-42" in tail for tail in out["tails"]) and len(out["tails"]) == 4
