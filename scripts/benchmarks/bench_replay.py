"""Benchmark: replay conformance of the local Azure against recorded Azure (issue 13).

Replays every vendored Azure CLI recording (``tests/fixtures/recordings/``, provenance and MIT
notice there) against a local Azure built like the recording's world, and prints the figure
"N recorded interactions replayed / M conforming", the explained differences with their reasons
(``tests/sim/replay_support.py``: ``ALLOWED``), and any unexplained one.

Run: ``python scripts/benchmarks/bench_replay.py [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(_ROOT), str(_ROOT / "tests" / "sim")) if p not in sys.path]

import replay_support  # noqa: E402


def run() -> dict[str, Any]:
    """Replay everything; the figure, the explained differences by reason, the unexplained ones."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="azrun-replay-") as tmp:
        summary = replay_support.replay_all(Path(tmp))
    reasons = Counter(reason for o in summary.outcomes for _, reason in o.explained)
    return {
        "replayed": summary.replayed,
        "conforming": summary.conforming,
        "explained": summary.explained,
        "unexplained": summary.unexplained(),
        "skipped_operation_polls": summary.skipped,
        "recordings": len(replay_support.recordings()),
        "explained_by_reason": dict(reasons.most_common()),
        "line": summary.line(),
        "wall_s": round(time.monotonic() - began, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = run()
    print(f"replay: {result['line']}")
    print(f"{result['recordings']} recordings, {result['wall_s']} s")
    for reason, count in result["explained_by_reason"].items():
        print(f"  {count:3d} x explained: {reason}")
    for line in result["unexplained"]:
        print(f"  UNEXPLAINED {line}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if result["unexplained"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
