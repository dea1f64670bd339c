"""Run every benchmark (or those named): `python -m bench [name ...]`, e.g. `python -m bench framing`."""
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
    names = [a for a in argv if not a.startswith("-")] or discover()
    flags = [a for a in argv if a.startswith("-")]
    failed = []
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.perf_counter()
        try:   # one broken benchmark must not hide the others' figures
            importlib.import_module(f"bench.bench_{name}").main(flags)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - started:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
