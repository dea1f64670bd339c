"""`exchange-node demo storm` on real processes: the unprotected restart storms the target, the
protected one starts gently and still delivers everything; the demo takes under a minute and
leaves no process behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_storm_without_and_with_protection(tmp_path) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "node.cli", "demo", "storm", "--json", "--work-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    off, on = report["runs"]
    assert (off["mode"], on["mode"]) == ("off", "on")
    assert off["peak_rate"] >= 10 * on["first_second_rate"] > 0, (off["peak_rate"], on["first_second_rate"])
    assert on["delivered"] == on["pending"] == 2000 and on["all_delivered_s"] is not None
    assert on["target"]["errors"] + on["target"]["overloaded"] < off["target"]["errors"] + off["target"]["overloaded"]
    assert on["protection"]["mechanisms"]["rpc.warmup"]["enforced"] > 0
    assert off["protection"]["mode"] == "off" and not any(
        row["enforced"] or row["shadowed"] for row in off["protection"]["mechanisms"].values())
    assert report["seconds"] < 60 and elapsed < 60, (report["seconds"], elapsed, report["load"])
    assert report["pids"] and not any(alive(pid) for pid in report["pids"])
