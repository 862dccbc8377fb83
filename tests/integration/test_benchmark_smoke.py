"""CI keeps the benchmark harness from rotting: a tiny run must complete and deliver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_harness_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["throughput"]["delivered"] == results["throughput"]["jobs"] == 20
    assert results["memory"]["waiting"] == 200
