"""Run every benchmark (or those named): `python -m bench [name ...] [--quick | --smoke] [--key=value ...]`.

`--quick`: shorter runs whose figures are still worth reading. `--smoke`: the smallest settings, a few
seconds each, only to check that every benchmark still runs and prints its tables (the fast test tier
runs them so, tests/test_bench_smoke.py); its figures mean nothing. Other dashed words go to every
benchmark named (see each bench/bench_<name>.py for its own). Exits 1 naming the benchmarks that failed.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import bench


def discover() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\nBenchmarks: " + ", ".join(discover()))
        return 0
    names = [a for a in argv if not a.startswith("-")] or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(discover())}", file=sys.stderr)
        return 2
    flags = [a for a in argv if a.startswith("-")]
    if "--smoke" in flags:
        print("--smoke: the smallest settings, only to check that every table prints; the figures mean nothing")
    failed = []
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        try:   # one broken benchmark must not hide the others' figures
            importlib.import_module(f"bench.bench_{name}").main(flags)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
