"""Fixtures of the fault matrix: ``world(fleet_text)`` starts a local Azure (with Azurite) of the
row's own and hands back a :class:`FaultWorld`; everything it started is stopped afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_support import FaultWorld


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only): the state dir of the disk-full row lives there."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small tmpfs needs root (mount -t tmpfs); not faked, so this row is skipped here")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def world(sim_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., FaultWorld]]:
    made: list[FaultWorld] = []

    def make(fleet_text: str, *, state_dir: Path | None = None) -> FaultWorld:
        w = FaultWorld(sim_factory(fleet_text, storage=True), tmp_path, state_dir=state_dir)
        made.append(w)
        return w

    try:
        yield make
    finally:
        for w in made:
            w.close()
