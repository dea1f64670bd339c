"""`make test` runs the linters first: ruff over the tree and mypy (disallow_untyped_defs) over the package and the
client library."""
from __future__ import annotations

import pytest

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.process     # make -n
def test_make_test_runs_ruff_and_mypy_before_the_suite() -> None:
    dry = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    commands = dry.stdout.splitlines()
    ruff = next(i for i, c in enumerate(commands) if "ruff check" in c)
    mypy = next(i for i, c in enumerate(commands) if re.search(r"/mypy(\s|$)", c))
    pytest_at = next(i for i, c in enumerate(commands) if "-m pytest" in c)
    assert ruff < pytest_at and mypy < pytest_at


def test_mypy_checks_every_package_and_the_tests_with_untyped_defs_disallowed_in_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy = config["tool"]["mypy"]
    packages = {p.split("*")[0] for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    client = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["tool"]["setuptools"]
    packages |= {f"clients/python/{p.split('*')[0]}" for p in client["packages"]["find"]["include"]}
    assert set(mypy["files"]) == packages | {"tests"}
    assert mypy["disallow_untyped_defs"] is True and mypy["disallow_any_generics"] is True
    relaxed = [o for o in mypy["overrides"] if "tests.*" in o["module"]]
    assert relaxed and all(set(o) <= {"module", "disallow_untyped_defs", "disallow_any_generics", "warn_return_any",
                                       "warn_unreachable"} for o in relaxed), relaxed     # bodies stay checked


def test_the_two_tiers_select_every_test_but_soak_and_container_once() -> None:
    """`make test` runs FAST then PROCESS_TIER: for every combination of markers a test can carry, exactly
    one of the two selects it, unless it is a soak or container test, which neither does."""
    import itertools
    import re

    from _pytest.mark.expression import Expression

    from tests.conftest import FAST_EXCLUDED, PROCESS_MARKS

    makefile = (ROOT / "Makefile").read_text()
    fast_line = re.search(r"^FAST := (.*)$", makefile, re.M)
    process_line = re.search(r"^PROCESS_TIER := (.*)$", makefile, re.M)
    assert fast_line is not None and process_line is not None
    fast = Expression.compile(fast_line.group(1))
    process = Expression.compile(process_line.group(1))
    marks = sorted(set(FAST_EXCLUDED))
    for n in range(len(marks) + 1):
        for carried in itertools.combinations(marks, n):
            def carries(name: str, /, **kwargs: str | int | bool | None) -> bool:     # pytest's ExpressionMatcher
                return name in carried
            chosen = [tier.evaluate(carries) for tier in (fast, process)]
            if {"soak", "container"} & set(carried):
                assert chosen == [False, False], carried
            else:
                assert sum(chosen) == 1, carried
                assert chosen[0] == (not carried), carried      # the fast tier is the tests with no marker of these
    assert set(PROCESS_MARKS) | {"slow"} == set(marks)
    registered = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert set(marks) <= {line.split(":")[0] for line in registered}


def test_the_real_process_tier_starts_the_longest_files_first() -> None:
    """tests/conftest.py puts LONGEST_FIRST at the head of the collection; under --dist loadfile xdist keeps that
    order only with --no-loadscope-reorder (by default it sorts files by their number of tests, which put the
    longest, one-test files last), and a file renamed away from the list would silently lose its place."""
    from tests.conftest import LONGEST_FIRST, TESTS

    runs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "--dist loadfile" in line]
    assert runs and all("--no-loadscope-reorder" in line for line in runs), runs
    assert [path for path in LONGEST_FIRST if not (TESTS / path).is_file()] == []
