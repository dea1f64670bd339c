"""One flipped byte at a random offset of the consensus WAL of a validator stopped mid-height, on real
processes: it never signs again at that height (no equivocation anywhere, the validator set keeps it), and
the network decides without it. (The block-log flips: test_storage_bitflips.py.)
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.harness import Cluster, converged, wait_until
from tests.integration.answers import Answers, random_order
from tests.integration.storage_flips import (FAST, consensus_counter, flip_at, flip_random_byte, frames_of,
                                             honest_everywhere, place_orders, restart, restart_all)

# a restart is mostly the node's own CPU: beside another test that restarts nodes on two busy cores this run
# takes up to twice its 75 s alone, past the suite's 120 s default
pytestmark = pytest.mark.timeout(240)

# 6 flips in the default run; 24 in `make soak`
WAL_FLIPS = int(os.environ.get("STORAGE_WAL_FLIPS", "6"))


def has_bytes(directory: Path) -> bool:
    return any(p.stat().st_size for p in directory.iterdir() if p.name.endswith(".seg"))


def may_hide_an_undecided_record(wal: Path, path: Path, offset: int, decided: int) -> bool:
    """Can the record a flip at `offset` of `path` damaged be of a height above `decided`? Not when an intact
    record after it is of a decided height (the WAL's heights never decrease); else (nothing intact after it,
    or the next one is of the height in progress) it can. Read from the files, not from what the node says."""
    from exchange.chain.types.codec import unpack
    from exchange.chain.consensus.tendermint import wal_record_height
    from storage.frames import DATA_START, decode_frame, decode_segment_header, scan

    for segment in sorted(p for p in wal.iterdir() if p.name.endswith(".seg") and p.name >= path.name):
        data = segment.read_bytes()
        header = decode_segment_header(data)
        if header is None:
            continue
        found = scan(data, header[1], header[0], DATA_START)
        for n, start in enumerate(found.offsets):
            if segment == path and start <= offset:
                continue
            body = decode_frame(data, start, header[1], found.indexes[n])
            height = None if body is None else wal_record_height(unpack(body))
            if height is not None:
                return height > decided
    return True


def test_flips_in_the_wal_of_a_validator_stopped_mid_height_never_make_it_sign_twice(cluster: Cluster):
    flip_wals(cluster, WAL_FLIPS)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_24_flips_in_the_wal_never_make_a_validator_sign_twice(cluster: Cluster):
    flip_wals(cluster, 24)


def flip_wals(cluster: Cluster, flips: int) -> None:
    """Two of four validators stop, so the other two sign at a height that cannot be decided (their WAL holds
    it); one of them stops and a byte of its WAL flips. It restarts first, beside the validator that holds its
    earlier votes of that height: damage that may hide one of its records of that height must keep it from
    signing there (an equivocation would show in that validator's counters and get it removed from the set);
    damage only before a record of a decided height, or an intact WAL, lets it go on as it was."""
    nodes = cluster.chain(4, **FAST)
    answers = Answers()
    rng = random.Random(77)
    damaged = floored = 0
    for flip in range(flips):
        target, witness, *down = nodes[flip % 4:] + nodes[:flip % 4]
        place_orders(answers, nodes, rng, 2, wait=1.0)
        for node in down:
            assert node.stop() == 0
        answers.post(target, random_order(rng), wait=0)
        wal = target.data_dir / "chain" / "wal"
        wait_until(lambda: has_bytes(wal), 20, message="the height without a quorum in the WAL")
        decided = target.status()["height"]
        assert target.stop() == 0
        if flip == 0:       # certainly a record of the height in progress: the newest one
            path = max(p for p in wal.iterdir() if p.name.endswith(".seg") and p.stat().st_size)
            start, end = frames_of(path)[-1]
            offset, mask = (start + end) // 2, 0x21
            flip_at(path, offset, mask)
        else:
            path, offset, mask = flip_random_byte(wal, rng)
        where = f"flip {flip}: {path.name} byte {offset} ^ {mask:#04x}"
        at_risk = may_hide_an_undecided_record(wal, path, offset, decided)
        before = target.log_path.read_text(errors="replace").count("consensus WAL in")
        assert restart(target) == "up", where
        status = target.status()
        if target.log_path.read_text(errors="replace").count("consensus WAL in") > before:
            damaged += 1
            floored += at_risk
            sign_from = status["exchange"]["sign_from"]
            assert status["height"] == decided, where
            if at_risk:
                assert sign_from >= decided + 2, (where, sign_from, decided)
            else:
                assert sign_from <= decided + 1, (where, sign_from, decided)
        time.sleep(1.5)         # the two of them at that height, without a quorum: would it sign there again?
        assert restart_all(down) == ["up"] * len(down), where
        wait_until(lambda: converged(nodes) and target.status()["exchange"]["recovering"] is None, 60,
                   interval=0.3, message=f"{where}: the four agree again")
        for node in nodes:
            assert consensus_counter(node, "equivocations") == 0, f"{where}: {node.name} saw an equivocation"
            assert len(node.status()["validators"]) == 4, f"{where}: the validator set changed"
        honest_everywhere(nodes)
    place_orders(answers, nodes, rng, 5, wait=2.0)
    wait_until(lambda: converged(nodes), 30, interval=0.3)
    answers.settle(nodes)
    assert not answers.problems, answers.problems[:10]
    assert damaged >= flips // 4, f"only {damaged} of {flips} flips damaged a WAL record"
    print(f"WAL flips: {damaged} damaged a record, {floored} of them one that may be of the undecided height")
    assert floored >= 1, "the flip of the newest record did not count as damage that may hide a vote"
