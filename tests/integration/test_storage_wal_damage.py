"""Issue #24 on real processes: three flipped bytes in the middle of one validator's WAL (a pinned set of four)
cost no height. The records there are of heights decided long before and every record after them checks, so
the validator signs again at once, at the very height it restarts at.

1. While it is stopped, damaged and restarted, orders keep being placed one after the other on the three
   others, each answered final (201) within its wait: the network never stops finalising.
2. Then, with the network idle (no orders, no empty blocks: nothing decided meanwhile), the same again, and
   once it is back a second validator stops: the height in progress can be decided only with the damaged
   validator's votes (3 of 4), so an order final there proves it signs at the height it restarted at. A
   floor applied as before (not signing at that height) would leave that order pending.
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.answers import Answers, random_order
from tests.integration.chain_nodes import pinned_loopback, wait_for
from tests.integration.storage_flips import (consensus_counter, flip_at, frames_of, honest_everywhere, place_orders,
                                             restart)

IDLE = 600.0        # EMPTY_BLOCK_INTERVAL: an idle network decides nothing while the test looks
PROBE_WAIT = 5.0    # each probe must be final within this


def wal_frames(node: NodeProcess) -> tuple[Path | None, list[tuple[int, int]]]:
    """The node's WAL segment holding the most records, and their frames."""
    wal = node.data_dir / "chain" / "wal"
    segments = [p for p in wal.iterdir() if p.name.endswith(".seg") and p.stat().st_size]
    found = [(p, frames_of(p)) for p in segments]
    return max(found, key=lambda item: len(item[1]), default=(None, []))


def flip_three_in_the_middle(node: NodeProcess) -> tuple[Path, int]:
    """Three bytes flipped in the middle record of the node's WAL (stopped); returns (segment, offset)."""
    segment, frames = wal_frames(node)
    assert segment is not None
    assert len(frames) >= 20, f"the WAL holds only {len(frames)} records"
    start, end = frames[len(frames) // 2]
    middle = (start + end) // 2
    for offset in (middle - 1, middle, middle + 1):
        flip_at(segment, offset, 0x5A)
    return segment, middle


class Prober(threading.Thread):
    """Orders one after another on `nodes` in turn, each waited for up to PROBE_WAIT: (code, seconds) each."""

    def __init__(self, answers: Answers, nodes: list[NodeProcess], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.answers, self.nodes, self.rng = answers, nodes, rng
        self.results: list[tuple[int, float]] = []
        self.halt = threading.Event()
        self.first = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            node = self.nodes[n % len(self.nodes)]
            n += 1
            began = time.monotonic()
            code, _ = self.answers.post(node, random_order(self.rng), wait=PROBE_WAIT, timeout=PROBE_WAIT + 10)
            self.results.append((code, time.monotonic() - began))
            self.first.set()


def wal_log_lines(node: NodeProcess, since: int) -> tuple[str, str]:
    """(the harmless-damage line, any 'not signing' line) the node logged after byte `since` of its log."""
    text = node.log_path.read_text(errors="replace")[since:]
    harmless = next((line for line in text.splitlines() if "the consensus WAL lost" in line), "")
    floor = next((line for line in text.splitlines() if "not signing" in line), "")
    return harmless, floor


def test_three_flipped_bytes_in_the_middle_of_a_validators_wal_cost_no_height(cluster: Cluster):
    validators, _ = pinned_loopback(cluster, 4, heartbeat_interval=0.2, empty_block_interval=IDLE)
    target, second, *others = validators
    answers = Answers()
    rng = random.Random(24)
    place_orders(answers, validators, rng, 30, wait=3.0)       # the WAL holds the records of ~30 heights
    assert answers.codes[201] == 30, answers.codes

    # 1. the network finalises all along
    prober = Prober(answers, [second, *others], rng)
    prober.start()
    assert prober.first.wait(PROBE_WAIT + 10)
    assert target.stop() == 0
    segment, offset = flip_three_in_the_middle(target)
    log_size = len(target.log_path.read_text(errors="replace"))
    assert restart(target) == "up"
    status = target.status()
    harmless, floor = wal_log_lines(target, log_size)
    assert "consensus WAL in" in target.log_path.read_text(errors="replace")[log_size:], "no damage found"
    assert harmless and "signing as before" in harmless and not floor, (harmless, floor, target.log_tail(20))
    sign_from = status["exchange"]["sign_from"]
    assert sign_from is not None and sign_from <= status["height"] + 1, (sign_from, status["height"])
    wait_for(lambda: converged(validators), 60, "the restarted validator catches up", validators)
    count = len(prober.results)
    wait_until(lambda: len(prober.results) >= count + 5, 60, message="five more probes after the catch-up")
    prober.halt.set()
    prober.join(PROBE_WAIT + 15)
    codes = [code for code, _ in prober.results]
    assert codes and all(code == 201 for code in codes), f"a probe was not final within {PROBE_WAIT}s: {codes}"
    print(f"phase 1: {len(codes)} probes, slowest {max(s for _, s in prober.results):.2f}s; "
          f"{segment.name} byte {offset}")

    # 2. it signs at the very height it restarts at
    def wal_filled() -> bool:      # the damaged WAL went at the first height decided after the restart
        place_orders(answers, validators, rng, 1, wait=3.0)
        return len(wal_frames(target)[1]) >= 20
    wait_for(wal_filled, 60, "the restarted validator's WAL holds 20 records again", validators)
    wait_for(lambda: converged(validators), 30, "the four agree", validators)
    height = target.status()["height"]
    assert target.stop() == 0
    flip_three_in_the_middle(target)
    log_size = len(target.log_path.read_text(errors="replace"))
    assert restart(target) == "up"
    harmless, floor = wal_log_lines(target, log_size)
    assert harmless and not floor, (harmless, floor, target.log_tail(20))
    assert target.status()["height"] == height and second.status()["height"] == height, "the network moved"
    assert second.stop() == 0
    code, body = answers.post(others[0], random_order(rng), wait=20.0, timeout=40.0)
    assert code == 201, (f"not final with the damaged validator and two others (it does not sign at height "
                         f"{height + 1}?): {code} {body}\n{target.log_tail(20)}")
    assert restart(second) == "up"
    place_orders(answers, validators, rng, 3, wait=3.0)
    wait_for(lambda: converged(validators), 30, "the four agree again", validators)
    answers.settle(validators)
    assert not answers.problems, answers.problems[:10]
    for node in validators:
        assert consensus_counter(node, "equivocations") == 0, f"{node.name} saw an equivocation"
        assert len(node.status()["validators"]) == 4, f"{node.name}: the validator set changed"
    honest_everywhere(validators)
