"""How busy the machine's CPUs were between two readings of /proc/stat, for `make test`'s tier lines.

`python scripts/cpu_busy.py save FILE` stores the counters; `python scripts/cpu_busy.py since FILE` prints the share
of CPU time spent busy since then (user, system, interrupts; not idle or waiting for I/O), e.g. "CPU 87 % busy".
The load average alone cannot tell a tier that waits on the disk from one that is short of cores."""
from __future__ import annotations

import sys
from pathlib import Path


def counters() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


def busy_share(before: list[int], after: list[int]) -> float:
    spent = [b - a for a, b in zip(before, after)]
    idle = spent[3] + (spent[4] if len(spent) > 4 else 0)        # idle, iowait
    total = sum(spent[:8])                                       # guest time is already counted in user
    return 0.0 if total <= 0 else (total - idle) / total


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("save", "since"):
        print("usage: cpu_busy.py save|since FILE", file=sys.stderr)
        return 2
    path = Path(argv[2])
    try:
        if argv[1] == "save":
            path.write_text(" ".join(map(str, counters())))
            return 0
        before = [int(value) for value in path.read_text().split()]
        print(f"CPU {100 * busy_share(before, counters()):.0f} % busy")
    except (OSError, ValueError):
        print("CPU busy unknown")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
