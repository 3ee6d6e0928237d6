"""Replay conformance: recorded Azure CLI traffic against the local Azure (see replay_support).

Prints (and writes to ``replay-figure.txt`` in the test's tmp dir) the figure
"N recorded interactions replayed / M conforming"; ``scripts/benchmarks/bench_replay.py``
prints the same figure with every explained difference.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_support import ALLOWED, recordings, replay_all, unused_rules


def test_recordings_are_vendored_with_their_provenance() -> None:
    found = recordings()
    assert len(found) >= 10
    provenance = (found[0].parent / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "MIT License" in provenance and "Azure/azure-cli" in provenance
    assert all(path.name in provenance for path in found)


@pytest.mark.slow
def test_recorded_requests_replay_with_only_explained_differences(tmp_path: Path) -> None:
    summary = replay_all(tmp_path)
    print(f"\nreplay: {summary.line()}")
    (tmp_path / "replay-figure.txt").write_text(summary.line() + "\n", encoding="utf-8")
    assert summary.unexplained() == []
    assert summary.replayed >= 100 and summary.conforming >= 80  # a regression shows here first
    assert unused_rules(summary) == []  # every allow-list entry still explains something
    assert all(rule.reason for rule in ALLOWED)
