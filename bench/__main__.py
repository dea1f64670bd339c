"""Run every benchmark (or those named): `python -m bench [name ...]`, e.g. `python -m bench framing`."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def discover() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or discover()
    flags = [a for a in argv if a.startswith("-")]
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        module.main(flags)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
