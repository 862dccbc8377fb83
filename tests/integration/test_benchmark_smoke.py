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
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["throughput"]["delivered"] == results["throughput"]["jobs"] == 20
    assert results["memory"]["waiting"] == 200
    # Every figure the report needs is there; none of them is judged here.
    assert [u["enhance_ahead"] for u in results["utilisation"]] == [0.0, 2.0]
    assert all(u["jobs"] == 3 for u in results["utilisation"])
    assert set(results["floor"]) == {"httpx", "streams"}
    assert results["throughput"]["commits_per_job"] > 0
    assert results["cpu_split_ms"]
    assert results["chats_rss"]["status_lanes_left"] == 0
