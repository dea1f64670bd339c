"""Starting from a peer's snapshot: accepted only when every part checks out against the genesis.

A simulated network with followers that join (so the validator set changes, epochs 0 -> n) runs with
snapshots every 10 heights; a brand-new core is then offered a snapshot, the commit of its block, the
certified block after it and the epoch proofs. The honest bundle is installed; any tampering (a byte of
the snapshot, a proof's signatures, a commit for another block, a proof left out) is refused and leaves
the new core untouched.
"""
from __future__ import annotations


from exchange.chain.types.blocks import Commit
from exchange.chain.state.chainstate import ChainState
from tests.sim.chain_sim import ChainSimulation, Scenario, SimApp, joining_core, sim_app_from


def _network() -> ChainSimulation:
    sim = ChainSimulation(4, Scenario(validators=1, followers=3, pinned=False, joiners=3, max_validators=4, seat_rule="any",
                                      drop=0.0, duplicate=0.0, fault_until=3.0, settle=2.0, snapshot_interval=10))
    result = sim.run()
    assert not result["problems"]
    return sim


def _bundle(sim: ChainSimulation):
    node = sim.nodes[0]
    store = node.store.blocks
    replay = ChainState(sim.genesis, SimApp())
    proofs, snapshots = [], []
    for height in sorted(store):
        block, commit = store[height]
        outcome = replay.apply_block(block)
        if outcome.validators_changed:
            proofs.append((block, commit))
        if replay.last_snapshot is not None and replay.last_snapshot[0] == height and height + 1 in store:
            snapshots.append((replay.last_snapshot[1], store[height][1], *store[height + 1], list(proofs)))
    assert len(proofs) >= 2, "the set must have changed for epoch proofs to matter"
    return snapshots[-1]


def test_an_honest_snapshot_is_installed_and_anything_tampered_is_refused():
    sim = _network()
    data, commit_at, next_block, next_commit, proofs = _bundle(sim)
    now = sim._clock(sim.nodes[0])

    core = joining_core(sim)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    assert core.install_snapshot(bytes(flipped), commit_at, next_block, next_commit, proofs, sim_app_from, now)
    forged = [(b, Commit(c.height, c.round, c.block_id, tuple((i, bytes(64)) for i, _ in c.sigs))) for b, c in proofs]
    refused = core.install_snapshot(data, commit_at, next_block, next_commit, forged, sim_app_from, now)
    assert refused is not None and "proof" in refused
    assert core.install_snapshot(data, next_commit, next_block, next_commit, proofs, sim_app_from, now)
    assert core.install_snapshot(data, commit_at, next_block, next_commit, proofs[:-1], sim_app_from, now)
    assert core.height == 0 and core.state.validators.epoch == 0

    assert core.install_snapshot(data, commit_at, next_block, next_commit, proofs, sim_app_from, now) is None
    assert core.height == next_block.height
    assert core.state.hash == sim.decided[next_block.height][1]
