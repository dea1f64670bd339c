"""`make test` runs the linters first: ruff over the tree and mypy (disallow_untyped_defs) over the package."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_test_runs_ruff_and_mypy_before_the_suite() -> None:
    dry = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    commands = dry.stdout.splitlines()
    ruff = next(i for i, c in enumerate(commands) if "ruff check" in c)
    mypy = next(i for i, c in enumerate(commands) if c.endswith("/mypy"))
    pytest_at = next(i for i, c in enumerate(commands) if "-m pytest" in c)
    assert ruff < pytest_at and mypy < pytest_at


def test_mypy_checks_every_package_with_untyped_defs_disallowed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy = config["tool"]["mypy"]
    packages = {p.split("*")[0] for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert set(mypy["files"]) == packages
    assert mypy["disallow_untyped_defs"] is True
