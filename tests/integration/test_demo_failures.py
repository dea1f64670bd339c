"""`exchange-node demo failures` on real processes: a slow and a crashed worker are detected and
routed away from, measured, and every process the demo started is gone afterwards."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ROOT
from tests.integration.test_demo_storm import alive

pytestmark = pytest.mark.timeout(240)


def test_demo_failures_measures_slow_and_crash(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "node.cli", "demo", "failures", "--scenarios", "slow,crash", "--json",
                           "--work-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    slow, crash = report["rows"]
    for row in (slow, crash):
        assert isinstance(row["detect_s"], float) and 0 <= row["detect_s"] < 4, row
        assert isinstance(row["route_away_s"], float) and 0 <= row["route_away_s"] < 4, row
    before = sum(n for t, n, _ in slow["attempts"] if t <= 2.0)
    after = sum(n for t, n, _ in slow["attempts"] if 3.0 < t <= 6.0)
    assert before > 0 and after / 3.0 < before / 2.0 / 3   # a third of its earlier rate at most, once slow
    assert report["pids"] and not any(alive(pid) for pid in report["pids"])
