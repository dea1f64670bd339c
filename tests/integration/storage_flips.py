"""What the storage bit-flip tests share (test_storage_bitflips*.py, test_storage_wal_damage.py): flip a byte of
a stopped node's files, restart it on its old port, and check that it agrees with its peers and penalised nobody."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from tests.harness import NodeProcess, converged
from tests.integration.answers import Answers, random_order

# restarts keep their seats, as an operator restarting does
FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "keep_seat": "true"}


def flip_random_byte(directory: Path, rng: random.Random, *, only: str = "") -> tuple[Path, int, int]:
    """XOR one byte at a uniformly random offset of the files in `directory` (names containing `only`) with a
    random non-zero mask; returns (file, offset, mask)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and only in p.name and p.stat().st_size)
    total = sum(p.stat().st_size for p in files)
    offset = rng.randrange(total)
    for path in files:
        size = path.stat().st_size
        if offset < size:
            mask = rng.randrange(1, 256)
            with open(path, "r+b") as file:
                file.seek(offset)
                byte = file.read(1)[0]
                file.seek(offset)
                file.write(bytes([byte ^ mask]))
            return path, offset, mask
        offset -= size
    raise AssertionError("unreachable")


def flip_at(path: Path, offset: int, mask: int = 0x5A) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ mask]))


def frames_of(segment: Path) -> list[tuple[int, int]]:
    """(start, end) of every intact record frame of a record-log segment file."""
    from storage.frames import DATA_START, decode_segment_header, scan

    data = segment.read_bytes()
    header = decode_segment_header(data)
    assert header is not None, segment
    found = scan(data, header[1], header[0], DATA_START)
    return list(zip(found.offsets, found.ends))


def restart(node: NodeProcess, timeout: float = 30.0) -> str:
    """Start a stopped node on its previous peer port (its peers remember it there); 'up' once its API
    answers, 'exited' if the process ended first."""
    return restart_all([node], timeout)[0]


def restart_all(nodes: list[NodeProcess], timeout: float = 30.0) -> list[str]:
    """`restart` for several stopped nodes at once: all started, then each waited for (a node's start is
    mostly its own CPU, so one after the other only adds up their waits)."""
    for node in nodes:
        node.start(wait=False, p2p_port=node.p2p_port)
    deadline = time.monotonic() + timeout
    return [_up_or_exited(node, deadline) for node in nodes]


def _up_or_exited(node: NodeProcess, deadline: float) -> str:
    while time.monotonic() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            return "exited"
        try:
            node.wait_ready(0.5)
            return "up"
        except AssertionError:
            continue
    raise AssertionError(f"{node.name} neither started nor exited:\n{node.log_tail()}")


def recovered(node: NodeProcess, peers: list[NodeProcess]) -> bool:
    status = node.status()["exchange"]
    return status["recovering"] is None and status["disk_error"] is None and converged([node, *peers])


def place_orders(answers: Answers, nodes: list[NodeProcess], rng: random.Random, count: int, wait: float) -> None:
    for _ in range(count):
        answers.post(rng.choice(nodes), random_order(rng), wait=wait)


def honest_everywhere(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        log_text = node.log_path.read_text(errors="replace")
        assert "penalising peer" not in log_text, f"{node.name} penalised an honest peer:\n{node.log_tail()}"
        assert node.status()["p2p"]["counters"]["bans"] == 0, node.name


def consensus_counter(node: NodeProcess, name: str) -> int:
    consensus = node.status()["exchange"]["consensus"] or {}
    return consensus.get(name, 0)
