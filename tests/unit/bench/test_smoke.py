"""Every benchmark still starts and prints its tables: `python -m bench NAME --smoke` (the smallest
settings, a few seconds each) in a fresh process, one test per benchmark found in bench/. A benchmark
that no longer runs from this tree (an import moved, a child process that dies, a table that raises)
fails here instead of in the next `make bench`."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.__main__ import discover
from tests.harness import ROOT

pytestmark = pytest.mark.process     # each benchmark in a fresh `python -m bench` (real nodes among them)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", discover())
def test_benchmark_runs_with_smallest_settings(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", name, "--smoke"], cwd=ROOT, capture_output=True,
                          text=True, timeout=220)
    report = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, report
    assert f"=== bench {name} ===" in done.stdout and "failed:" not in done.stdout, report
    assert "(load avg" in done.stdout, report      # at least one table printed (print_table adds the load)
    assert "Traceback" not in done.stderr, report


def test_every_benchmark_is_found() -> None:
    """discover() is what `make bench` and the smoke tests run: a bench_*.py module it missed would go unchecked."""
    modules = sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))
    assert discover() == modules and len(modules) >= 12


def test_unknown_benchmark_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "no_such_bench"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "no_such_bench" in done.stderr
