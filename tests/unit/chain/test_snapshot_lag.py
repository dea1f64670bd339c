"""A snapshot certified `snapshot_lag` heights after it was taken (exchange/chain/state/snapshot_maker.py).

The genesis keeps its old encoding and chain id without a lag; a simulated network with one stays safe and
certifies each snapshot's digest in the state hash `snapshot_lag` heights later; a new core installs an
honest snapshot with the certificate of its bytes and refuses it when the bytes, the certificate or its
commit were tampered with or left out; a snapshot whose encoding was lost halts the chain instead of
applying a block whose hash it cannot compute.
"""
from __future__ import annotations

import random

import pytest

from exchange.chain.types.blocks import Block, Commit
from exchange.chain.state.chainstate import SnapshotView, SNAPSHOT_FORCED_AFTER, ChainState
from exchange.chain.types.codec import digest, pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.snapshot_maker import InlineSnapshots, SnapshotLost, snapshot_digest
from exchange.chain.state.snapshot_proof import SnapshotCertificate
from tests.sim.chain_sim import ChainSimulation, Scenario, SimApp, joining_core, sim_app_from

INTERVAL, LAG = 10, 4

Bundle = tuple[bytes, Commit, Block, Commit, list[tuple[Block, Commit]], SnapshotCertificate]


def _genesis(lag: int) -> Genesis:
    return Genesis(network_id="n", created_ms=1, founder=bytes(32), validators=(bytes(32),), snapshot_interval=INTERVAL,
                   snapshot_lag=lag)


def test_a_genesis_without_a_lag_keeps_its_encoding_and_one_with_a_lag_round_trips():
    plain, lagged = _genesis(0), _genesis(LAG)
    assert len(plain.wire()) == 13 and Genesis.from_wire(plain.wire()) == plain
    assert digest("exchange-node/chain-id/v2", plain.wire()[:13]).hex() == plain.chain_id
    assert len(lagged.wire()) == 14 and Genesis.from_wire(lagged.wire()) == lagged
    assert lagged.chain_id != plain.chain_id
    for bad in (0, INTERVAL, -1, "4"):
        with pytest.raises(ValueError):
            Genesis.from_wire([*plain.wire(), bad])


def test_a_genesis_with_a_least_time_between_snapshots_round_trips_and_refuses_bad_values():
    timed = Genesis(network_id="n", created_ms=1, founder=bytes(32), validators=(bytes(32),),
                    snapshot_interval=INTERVAL, snapshot_lag=LAG, snapshot_min_ms=5_000)
    assert len(timed.wire()) == 15 and Genesis.from_wire(timed.wire()) == timed
    assert timed.chain_id != _genesis(LAG).chain_id
    unlagged = Genesis(network_id="n", created_ms=1, founder=bytes(32), validators=(bytes(32),),
                       snapshot_interval=INTERVAL, snapshot_min_ms=5_000)
    assert unlagged.wire()[13:] == [0, 5_000] and Genesis.from_wire(unlagged.wire()) == unlagged
    for bad in (0, -1, 86_400_001, "5000", 1.5):
        with pytest.raises(ValueError):
            Genesis.from_wire([*timed.wire()[:14], bad])
    with pytest.raises(ValueError):
        Genesis.from_wire([*timed.wire()[:13], INTERVAL, 5_000])      # a lag must stay below the interval


def _network(min_ms: int = 0, seed: int = 7) -> ChainSimulation:
    sim = ChainSimulation(seed, Scenario(validators=1, followers=3, pinned=False, joiners=3, max_validators=4,
                                         seat_rule="any", drop=0.0, duplicate=0.0, fault_until=3.0, settle=2.0,
                                         snapshot_interval=INTERVAL, snapshot_lag=LAG, snapshot_min_ms=min_ms))
    result = sim.run()
    assert not result["problems"], result["problems"]
    return sim


def _replay(sim: ChainSimulation, start: tuple[int, bytes] | None = None) -> tuple[list[int], list[int], ChainState]:
    """Heights snapshotted and heights whose state hash certified one, folding the first node's stored blocks
    into a fresh state (from genesis, or from a snapshot's bytes)."""
    store = sim.nodes[0].store.blocks
    maker = InlineSnapshots()
    state = ChainState(sim.genesis, SimApp(), maker)
    if start is not None:
        state.restore(start[1], sim_app_from)
    taken: list[int] = []
    certified: list[int] = []
    for height in sorted(h for h in store if h > state.height):
        if state.certified_at(height) is not None:
            certified.append(height)
        state.apply_block(store[height][0])
        taken += [h for h, _ in maker.take_ready()]
    return taken, certified, state


def test_the_state_hash_covers_a_snapshot_lag_heights_after_it_was_taken():
    sim = _network()
    taken, certified, state = _replay(sim)
    assert taken == list(range(INTERVAL, state.height + 1, INTERVAL))       # no least time: every interval
    assert certified == [h + LAG for h in taken if h + LAG <= state.height]
    assert len(certified) >= 2


def test_snapshots_wait_for_block_time_and_every_node_agrees_which_heights_they_are():
    """With a least block time between snapshots, a fast chain snapshots less often than every interval; the
    heights follow from the chain, so a node that starts from a snapshot finds the same later ones as one that
    folded every block (a disagreement would split the state hash, and the simulation would find it)."""
    min_ms = 1_000
    sim = _network(min_ms)
    store = sim.nodes[0].store.blocks
    taken, certified, state = _replay(sim)
    assert len(taken) >= 3, taken
    times = {h: store[h][0].header.time_ms for h in [1, *taken]}
    assert taken[0] >= INTERVAL and times[taken[0]] - times[1] >= min_ms      # counted from the first block
    for before, after in zip(taken, taken[1:]):
        assert after - before >= INTERVAL
        assert times[after] - times[before] >= min_ms or after - before >= 10 * INTERVAL
    assert any(after - before > INTERVAL for before, after in zip(taken, taken[1:])), "blocks were never fast enough"
    assert certified == [h + LAG for h in taken if h + LAG <= state.height]
    maker = InlineSnapshots()
    source = ChainState(sim.genesis, SimApp(), maker)
    for height in range(1, taken[0] + 1):
        source.apply_block(store[height][0])
    first = maker.take_ready()[-1]
    assert first[0] == taken[0]
    later, later_certified, restored = _replay(sim, first)
    assert later == taken[1:] and later_certified == certified and restored.hash == state.hash
    view = {"interval": INTERVAL, "lag": LAG, "min_seconds": 1.0, "last_height": taken[-1],
            "last_time_ms": times[taken[-1]]}
    def rules(shown: SnapshotView) -> dict[str, object]:
        return {key: value for key, value in shown.items() if not key.startswith("loop_held")}
    assert rules(state.snapshot_view()) == view and rules(restored.snapshot_view()) == view, "what /status shows"
    assert state.snapshot_view()["loop_held_last_ms"] > 0, "how long the last one held the loop (encoded at once)"
    ago = state.snapshot_view()["loop_held_ago_s"]
    assert ago is not None and 0 <= ago < 60, "how long ago it ended"
    assert ChainState(sim.genesis, SimApp(), InlineSnapshots()).snapshot_view()["loop_held_ago_s"] is None


def _bundle(sim: ChainSimulation) -> Bundle:
    """The newest snapshot whose certificate is stored, with everything a peer serves with it."""
    store = sim.nodes[0].store.blocks
    maker = InlineSnapshots()
    replay = ChainState(sim.genesis, SimApp(), maker)
    proofs: list[tuple[Block, Commit]] = []
    taken: dict[int, bytes] = {}
    bundles: list[Bundle] = []
    for height in sorted(store):
        block, commit = store[height]
        if replay.apply_block(block).validators_changed:
            proofs.append((block, commit))
        taken.update(maker.take_ready())
        snapshot = height - LAG
        if snapshot in taken and snapshot + 1 in store and height + 1 in store:
            certificate = SnapshotCertificate(replay.certificates[snapshot], *store[height + 1])
            bundles.append((taken[snapshot], store[snapshot][1], *store[snapshot + 1], list(proofs), certificate))
    assert len(proofs) >= 2 and bundles, "the set must have changed, and a snapshot been certified"
    return bundles[-1]


def test_a_lagged_network_certifies_each_snapshot_and_a_joiner_checks_its_bytes_against_that():
    sim = _network()
    data, commit_at, next_block, next_commit, proofs, certificate = _bundle(sim)
    snapshot_height = commit_at.height
    certifying = snapshot_height + LAG
    assert certificate.block.header.height == certifying + 1
    # the certified state hash covers the digest of the bytes taken `LAG` heights before
    assert digest("exchange-node/state/v2", [*certificate.preimage, snapshot_digest(data)]) == \
        sim.decided[certifying][1]
    now = sim._clock(sim.nodes[0])

    def refused(why: str, **changed: object) -> None:
        core = joining_core(sim)
        args: dict[str, object] = {"data": data, "certificate": certificate, **changed}
        answer = core.install_snapshot(args["data"], commit_at, next_block, next_commit, proofs,  # type: ignore[arg-type]
                                       sim_app_from, now, args["certificate"])     # type: ignore[arg-type]
        assert answer is not None and why in answer, answer
        assert core.height == 0

    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    refused("", data=bytes(flipped))
    refused("no certificate", certificate=None)
    refused("does not cover its bytes", certificate=certificate._replace(
        preimage=[*certificate.preimage[:2], bytes(32), *certificate.preimage[3:]]))
    refused("not the block after", certificate=certificate._replace(block=next_block, commit=next_commit))
    forged = certificate.commit
    refused("no quorum certificate", certificate=certificate._replace(
        commit=Commit(forged.height, forged.round, forged.block_id, tuple((i, bytes(64)) for i, _ in forged.sigs))))
    refused("not the state of height", certificate=certificate._replace(
        preimage=[certifying + 1, *certificate.preimage[1:]]))

    core = joining_core(sim)
    assert core.install_snapshot(data, commit_at, next_block, next_commit, proofs, sim_app_from, now, certificate) is None
    assert core.height == next_block.height
    assert core.state.hash == sim.decided[next_block.height][1]
    # it goes on from there: the certifying height's state hash comes out right from the bytes it installed
    store = sim.nodes[0].store.blocks
    for height in range(next_block.height + 1, certifying + 2):
        core.load_block(*store[height])
        assert core.state.hash == sim.decided[height][1], height


class _LostMaker(InlineSnapshots):
    def digest(self, height: int) -> bytes:
        raise SnapshotLost(f"the snapshot of height {height} was lost: its worker process ended with status -9")


def test_a_lost_snapshot_halts_the_chain_before_the_block_that_would_certify_it():
    sim = _network()
    store = sim.nodes[0].store.blocks
    core = joining_core(sim, _LostMaker(), "replayer")
    certifying = INTERVAL + LAG
    for height in range(1, certifying):
        core.load_block(*store[height])
    before = core.state.hash
    core.load_block(*store[certifying])
    assert core.halted is not None and "status -9" in core.halted and "restart" in core.halted
    assert core.height == certifying - 1 and core.state.hash == before


def test_a_restored_snapshot_is_certified_from_its_own_bytes():
    sim = _network()
    store = sim.nodes[0].store.blocks
    maker = InlineSnapshots()
    replay = ChainState(sim.genesis, SimApp(), maker)
    for height in range(1, INTERVAL + 1):
        replay.apply_block(store[height][0])
    ((taken, data),) = maker.take_ready()
    assert taken == INTERVAL
    restored = ChainState(sim.genesis, SimApp(), InlineSnapshots())
    restored.restore(data, sim_app_from)
    assert restored.hash == replay.hash == sim.decided[INTERVAL][1]
    for height in range(INTERVAL + 1, INTERVAL + LAG + 1):
        restored.apply_block(store[height][0])
    assert restored.hash == sim.decided[INTERVAL + LAG][1]


def test_a_refused_snapshot_leaves_what_our_state_hash_will_certify_untouched():
    """A forged snapshot for a height whose digest we are still to certify must not replace that digest: the
    candidate state records it in a maker of its own, ours only once every check has passed."""
    sim = _network()
    data, commit_at, next_block, next_commit, proofs, certificate = _bundle(sim)
    height, now = commit_at.height, sim._clock(sim.nodes[0])
    core = joining_core(sim)
    fields = unpack(data)
    forged = pack([fields[0], fields[1] + 1, *fields[2:]])     # well formed, restores, certified by nobody
    assert "does not cover its bytes" in (core.install_snapshot(forged, commit_at, next_block, next_commit, proofs,
                                                                sim_app_from, now, certificate) or "")
    with pytest.raises(SnapshotLost):
        core.state.snapshots.digest(height)         # nothing recorded for that height
    assert core.install_snapshot(data, commit_at, next_block, next_commit, proofs, sim_app_from, now, certificate) \
        is None
    assert core.state.snapshots.digest(height) == snapshot_digest(data)


def test_snapshot_bytes_from_a_fuzzer_are_refused_with_a_reason_never_raised_nor_inflated():
    sim = _network()
    data, commit_at, next_block, next_commit, proofs, certificate = _bundle(sim)
    now = sim._clock(sim.nodes[0])
    fields = unpack(data)
    bomb = pack([fields[0], fields[1], 300_000_000, *fields[3:]])    # an id that bytes() would make 300 MB of
    core = joining_core(sim)
    assert "malformed" in (core.install_snapshot(bomb, commit_at, next_block, next_commit, proofs, sim_app_from, now,
                                                 certificate) or "")
    rng = random.Random(25)
    for _ in range(2_000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if mutated == data:
            continue        # a byte set to what it was: the honest snapshot
        why = core.install_snapshot(bytes(mutated), commit_at, next_block, next_commit, proofs, sim_app_from, now,
                                    certificate)
        assert why is not None and core.height == 0


def test_a_snapshot_held_back_by_block_time_is_taken_after_ten_intervals_anyway():
    """Block time is the proposers' clocks: were it held back, snapshots (and the blocks a restart replays)
    would still be bounded in heights."""
    state = ChainState(Genesis(network_id="n", created_ms=1, founder=bytes(32), validators=(bytes(32),),
                               snapshot_interval=INTERVAL, snapshot_lag=LAG, snapshot_min_ms=5_000), SimApp())
    state.snapshot_taken = (100, 1_000_000)
    assert not state.snapshot_due(100 + INTERVAL - 1, 9_000_000)         # never sooner than the interval
    assert not state.snapshot_due(100 + INTERVAL, 1_004_999)
    assert state.snapshot_due(100 + INTERVAL, 1_005_000)
    assert not state.snapshot_due(100 + SNAPSHOT_FORCED_AFTER * INTERVAL - 1, 1_000_001)
    assert state.snapshot_due(100 + SNAPSHOT_FORCED_AFTER * INTERVAL, 1_000_001)
