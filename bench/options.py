"""What several benchmarks share: the run size (`--quick`, `--smoke`), `--key=value` options over typed
defaults, and percentiles.

`--quick` gives figures worth reading in a fraction of the full time; `--smoke` only checks that the
benchmark still runs end to end, every table printed, within a few seconds (the fast test tier runs
every benchmark so: tests/test_bench_smoke.py); its figures mean nothing."""
from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def sized(argv: list[str], full: T, quick: T, smoke: T) -> T:
    """`smoke` with --smoke, else `quick` with --quick, else `full`."""
    if "--smoke" in argv:
        return smoke
    return quick if "--quick" in argv else full


def parse_options(argv: list[str], defaults: dict[str, Any], quick: dict[str, Any] | None = None,
                  smoke: dict[str, Any] | None = None) -> dict[str, Any]:
    """`defaults`, with `quick` applied for `--quick` and `smoke` (over `quick`) for `--smoke`, then each
    `--key=value` of a known key (typed as its default)."""
    opts = dict(defaults)
    if "--quick" in argv or "--smoke" in argv:
        opts.update(quick or {})
    if "--smoke" in argv:
        opts.update(smoke or {})
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            if key in opts:
                opts[key] = type(opts[key])(value)
    return opts


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
