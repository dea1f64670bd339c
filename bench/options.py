"""What several benchmarks share: `--key=value` options over typed defaults, and percentiles."""
from __future__ import annotations

from typing import Any


def parse_options(argv: list[str], defaults: dict[str, Any], quick: dict[str, Any] | None = None) -> dict[str, Any]:
    """`defaults`, with `quick` applied for `--quick`, then each `--key=value` of a known key (typed as its default)."""
    opts = dict(defaults)
    if "--quick" in argv and quick:
        opts.update(quick)
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
