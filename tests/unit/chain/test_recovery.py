"""The way out of a permanent halt, on the deterministic core: two of four validators gone for good.

A recovery consented to by both survivors is applied by every node, followers included, and the chain
finalises again with the two as its whole set; no block final before it changes. Refused by every node: a
recovery missing a survivor's signature, one seating a node outside the set, one naming another block at
H, one certified by a quorum of the old set instead of every member of the new one, one kept by a single
validator of four (a possible faulty minority). Epoch proofs carry a recovery to a node that starts from a
snapshot. An operator cannot consent while a quorum is heard.
"""
from __future__ import annotations

import pytest

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.chain.state.chainstate import encode_item
from exchange.chain.core import ChainCore
from exchange.chain.effects import SendTo
from exchange.chain.sync.epochs import BadProof, replay_epochs
from exchange.chain.state.membership import Recover
from exchange.chain.recovery.rules import RECOVERY_ROUND, RecoveryStatus
from exchange.chain.types.validators import ValidatorSet
from tests.sim.chain_sim import ChainSimulation, FakeKeys, Scenario, SimApp, fake_verify

GONE = (2, 3)


def _halted(with_lock: bool = False) -> ChainSimulation:
    """Four validators and two followers; validators 2 and 3 crash at t = 1 s and never come back. `with_lock`: the
    first seed from 11 whose crash comes mid-height, after a survivor precommitted a block of the halted height (a
    lock the recovery must carry); which seeds do depends on the whole message schedule, not on the rule tested."""
    for seed in range(11, 61):
        sim = ChainSimulation(seed, Scenario(validators=4, followers=2, pinned=False, drop=0.0, duplicate=0.0,
                                             crashes=[(1.0, 1e9, GONE[0]), (1.0, 1e9, GONE[1])], fault_until=1.5,
                                             settle=3.0, submit_rate=10.0, snapshot_interval=5))
        result = sim.run()
        assert result["halted_without_quorum"], result
        height = sim.nodes[0].core.height       # type: ignore[union-attr]
        if not with_lock or any(sim.nodes[i].core.consensus.own_lock(height + 1) for i in (0, 1)):  # type: ignore[union-attr]
            return sim
    raise AssertionError("no seed of 11-60 crashes the two validators mid-height with a lock to carry")


def _live(sim: ChainSimulation) -> list:
    return [n for n in sim.nodes if n.core is not None]


def _advance(sim: ChainSimulation, seconds: float) -> dict:
    sim.s.settle += seconds
    return sim.run()


def _keep(sim: ChainSimulation) -> tuple[bytes, ...]:
    return tuple(sim.nodes[i].keys.public_key for i in range(4) if i not in GONE)


def _consent(sim: ChainSimulation, index: int, keep: tuple[bytes, ...]) -> RecoveryStatus:
    node = sim.nodes[index]
    assert node.core is not None
    answer = node.core.halt_recovery.consent(keep, sim._clock(node))
    sim._drain(node)
    return answer


def test_a_recovery_signed_by_every_survivor_is_applied_everywhere_and_keeps_every_final_block():
    sim = _halted(with_lock=True)
    height = sim.nodes[0].core.height       # type: ignore[union-attr]
    before = {n.index: list(n.committed) for n in _live(sim)}
    assert all(len(c) == height for c in before.values()), "the survivors and followers agree on the last block"
    _advance(sim, 1.0)
    assert all(n.core.height == height for n in _live(sim)), "halted: nothing finalises without a quorum"
    keep = _keep(sim)
    locks = [sim.nodes[i].core.consensus.own_lock(height + 1) for i in (0, 1)]   # type: ignore[union-attr]
    first = _consent(sim, 0, keep)
    assert first["missing"] and first["height"] == height + 1
    _advance(sim, 1.0)
    assert all(n.core.height == height for n in _live(sim)), "one consent of two changes nothing"
    _consent(sim, 1, keep)
    for _ in range(20):                     # transactions after the recovery: final again
        sim._at(sim.now + 0.05, "submit", None)
    result = _advance(sim, 3.0)
    assert not result["problems"], result["problems"]
    assert not result["halted_without_quorum"]
    for node in _live(sim):
        core = node.core
        assert core.state.validators.keys == tuple(sorted(keep)), node.index
        assert core.height > height + 2, (node.index, core.height)
        assert node.committed[:height] == before[node.index], "a final block changed"
    recovered = sim.nodes[4].store.blocks[height + 1]
    assert recovered[1].round == RECOVERY_ROUND and len(recovered[1].sigs) == 2
    # a block of the halted height a survivor precommitted may be final on a gone validator: the recovery
    # carries the highest such lock's transactions and time, so its fills are kept exactly
    highest = max((lock for lock in locks if lock is not None), key=lambda lock: lock[0].round, default=None)
    assert locks[0] is not None or locks[1] is not None, "the seed crashes the two mid-height (a lock to carry)"
    assert highest is not None and recovered[0].txs[1:] == highest[1].txs
    assert recovered[0].header.time_ms == highest[1].header.time_ms


def _recovery_block(core: ChainCore, tx: Recover, *, proposer: bytes | None = None,
                    validators: ValidatorSet | None = None) -> Block:
    state = core.state
    after = validators or tx.next_set(state.validators)
    assert after is not None
    items = [encode_item(tx)]
    header = Header(core.chain_id, state.height + 1, state.time_ms + 50, state.last_block_id,
                    proposer or after.proposer(state.height + 1, RECOVERY_ROUND), state.hash, after.hash,
                    Block.txs_hash(items), core.last_commit)
    return Block(header, items)


def _next_set(change: Recover, validators: ValidatorSet) -> ValidatorSet:
    after = change.next_set(validators)
    assert after is not None            # a recovery always names the set after it
    return after


def _signed(sim: ChainSimulation, block: Block, signers: ValidatorSet, round_: int = RECOVERY_ROUND,
            leave_out: int = 0) -> Commit:
    keys = {n.keys.public_key: n.keys for n in sim.nodes}
    keys.update({k.public_key: k for k in _STRANGERS})
    sigs = tuple((i, Vote.create(sim.genesis.chain_id, PRECOMMIT, block.height, round_, block.id, key,
                                 keys[key].sign).sig)
                 for i, key in enumerate(signers.keys))
    return Commit(block.height, round_, block.id, sigs[:len(sigs) - leave_out])


_STRANGERS = [FakeKeys("recovery-stranger")]


def _offer(sim: ChainSimulation, block: Block, commit: Commit) -> ChainCore:
    follower = sim.nodes[-1].core
    assert follower is not None and not follower.is_validator
    follower.on_message("chain_decision", [block.wire(), commit.wire()], sim.nodes[0].keys.node_id, follower.now + 0.1)
    return follower


def test_every_node_refuses_a_recovery_that_breaks_the_rule():
    sim = _halted()
    follower = sim.nodes[-1].core
    assert follower is not None
    height, old = follower.height, follower.state.validators
    keep = _keep(sim)
    stranger = _STRANGERS[0].public_key
    cases = []
    ok = Recover(height, follower.state.last_block_id, keep)
    block = _recovery_block(follower, ok)
    cases.append(("a survivor's signature missing", block, _signed(sim, block, _next_set(ok, old), leave_out=1)))
    cases.append(("certified by a quorum of the old set", block, _signed(sim, block, old, leave_out=1)))
    cases.append(("signed at an ordinary round", block, _signed(sim, block, _next_set(ok, old), round_=0)))
    seating = Recover(height, follower.state.last_block_id, (*keep, stranger))
    block = _recovery_block(follower, seating)
    cases.append(("seating a node outside the set", block, _signed(sim, block, _next_set(seating, old))))
    other = Recover(height, bytes(32), keep)
    block = _recovery_block(follower, other)
    cases.append(("naming another block at H", block, _signed(sim, block, _next_set(other, old))))
    alone = Recover(height, follower.state.last_block_id, keep[:1])
    block = _recovery_block(follower, alone)
    cases.append(("kept by one validator of four", block, _signed(sim, block, _next_set(alone, old))))
    everyone_else = Recover(height, follower.state.last_block_id, keep)
    block = _recovery_block(follower, everyone_else, proposer=old.keys[0] if old.keys[0] not in keep else
                            next(k for k in keep if k != _next_set(ok, old).proposer(height + 1, RECOVERY_ROUND)))
    cases.append(("built by another than its designated member", block, _signed(sim, block, _next_set(ok, old))))
    for name, block, commit in cases:
        core = _offer(sim, block, commit)
        assert core.height == height, f"applied a recovery {name}"
        assert core.state.validators.keys == old.keys, name
        assert core.check.judge_certified(block, commit) is False, name
    good = _recovery_block(follower, ok)
    core = _offer(sim, good, _signed(sim, good, _next_set(ok, old)))
    assert core.height == height + 1 and core.state.validators.keys == tuple(sorted(keep)), \
        "the same recovery signed by every survivor is applied (the refusals above were for their flaws)"


def test_a_recovery_block_inside_an_ordinary_proposal_is_invalid():
    sim = _halted()
    validator = sim.nodes[0].core
    assert validator is not None
    state = validator.state
    tx = Recover(state.height, state.last_block_id, _keep(sim))
    items = [encode_item(tx)]
    header = Header(validator.chain_id, state.height + 1, state.time_ms + 10, state.last_block_id,
                    state.validators.keys[0], state.hash, state.validators.hash, Block.txs_hash(items),
                    validator.last_commit)
    why = validator.check.validate(Block(header, items), state.time_ms + 20)
    assert why == "recover_outside_a_recovery_block"


def test_an_operator_cannot_consent_while_a_quorum_is_heard_or_to_a_minority():
    sim = ChainSimulation(12, Scenario(validators=4, followers=1, pinned=False, drop=0.0, duplicate=0.0,
                                       fault_until=1.0, settle=1.0, submit_rate=5.0))
    assert not sim.run()["problems"]
    node = sim.nodes[0]
    core = node.core
    assert core is not None
    keep = (sim.nodes[0].keys.public_key, sim.nodes[1].keys.public_key)
    with pytest.raises(ValueError, match="not halted"):
        core.halt_recovery.consent(keep, sim._clock(node))
    with pytest.raises(ValueError, match="at least 2 of the 4"):
        core.halt_recovery.consent(keep[:1], sim._clock(node))
    with pytest.raises(ValueError, match="include this validator"):
        core.halt_recovery.consent((sim.nodes[1].keys.public_key, sim.nodes[2].keys.public_key), sim._clock(node))


def _app_from(snapshot: bytes) -> SimApp:
    app = SimApp()
    app.hash = snapshot         # SimApp's snapshot is its hash
    return app


def test_epoch_proofs_carry_a_recovery_to_a_node_starting_from_a_snapshot():
    sim = _halted()
    height = sim.nodes[0].core.height       # type: ignore[union-attr]
    keep = _keep(sim)
    _consent(sim, 0, keep)
    _consent(sim, 1, keep)
    _advance(sim, 4.0)
    store = sim.nodes[4].store.blocks
    proof = store[height + 1]
    sets = replay_epochs(sim.genesis, [proof], fake_verify)
    assert sets[-1][0] == height + 1 and sets[-1][1].keys == tuple(sorted(keep))
    short = Commit(proof[1].height, proof[1].round, proof[1].block_id, proof[1].sigs[:1])
    with pytest.raises(BadProof, match="every member"):
        replay_epochs(sim.genesis, [(proof[0], short)], fake_verify)
    # a fresh node installs a snapshot taken after the recovery, believing the recovered set
    snap_at = next(h for h in sorted(store) if h > height + 1 and h % 5 == 0 and h + 1 in store)
    replayer = sim._make_core(sim.nodes[5])
    for h in range(1, snap_at + 1):
        replayer.load_block(*store[h])
    assert replayer.state.last_snapshot is not None and replayer.state.last_snapshot[0] == snap_at
    data = replayer.state.last_snapshot[1]
    fresh = sim._make_core(sim.nodes[5])
    args = (data, store[snap_at][1], store[snap_at + 1][0], store[snap_at + 1][1])
    assert fresh.install_snapshot(*args, [], _app_from, fresh.now) is not None, \
        "without the recovery's proof the snapshot's set is unproven"
    assert fresh.install_snapshot(*args, [proof], _app_from, fresh.now) is None
    assert fresh.state.validators.keys == tuple(sorted(keep)) and fresh.height == snap_at + 1


def test_a_validator_never_signs_a_recovery_carrying_a_lower_lock_than_its_own():
    sim = _halted(with_lock=True)
    height = sim.nodes[0].core.height       # type: ignore[union-attr]
    keep = _keep(sim)
    locked = next(i for i in (0, 1) if sim.nodes[i].core.consensus.own_lock(height + 1) is not None)  # type: ignore[union-attr]
    node = sim.nodes[locked]
    core = node.core
    assert core is not None
    core.halt_recovery.consent(keep, sim._clock(node))
    core.take_effects()                     # kept from the others: only the crafted offer below reaches it
    tx = Recover(height, core.state.last_block_id, keep)
    new_set = tx.next_set(core.state.validators)
    assert new_set is not None
    crafted = _recovery_block(core, tx)     # carries no lock, though this validator holds one
    builder = new_set.proposer(height + 1, RECOVERY_ROUND)
    builder_keys = next(n.keys for n in sim.nodes if n.keys.public_key == builder)
    sig = Vote.create(core.chain_id, PRECOMMIT, height + 1, RECOVERY_ROUND, crafted.id, builder, builder_keys.sign).sig
    core.on_message("chain_recovery", ["offer", crafted.wire(), [[new_set.index[builder], sig]]], builder_keys.node_id,
                    sim._clock(node))
    assert crafted.id not in core.halt_recovery.signed.values()
    assert core.height == height
    if builder != core.public_key:          # it hands its lock to the builder instead
        sent = [e for e in core.take_effects() if isinstance(e, SendTo) and e.message["type"] == "chain_recovery"]
        assert sent and sent[0].node_id == builder_keys.node_id and sent[0].message["body"][0] == "lock"


def test_a_consent_survives_a_restart_and_the_recovery_completes():
    sim = _halted()
    height = sim.nodes[0].core.height       # type: ignore[union-attr]
    keep = _keep(sim)
    new_set = ValidatorSet(1, keep)
    first = next(i for i in (0, 1) if sim.nodes[i].keys.public_key == new_set.proposer(height + 1, RECOVERY_ROUND))
    _consent(sim, first, keep)              # the builder signs at once (the other waits for its block)
    _advance(sim, 0.5)
    assert any(r[0] == "recovery" for r in sim.nodes[first].wal), "the consent is in the WAL"
    sim._crash(first)
    sim._restart(first)
    restarted = sim.nodes[first].core
    assert restarted is not None
    assert restarted.consensus.sign_from == height + 2, "it signs nothing more at the halted height"
    status = restarted.halt_recovery.status()
    assert status is not None and status["state"] == "consented"
    _consent(sim, 1 - first, keep)
    result = _advance(sim, 3.0)
    assert not result["problems"], result["problems"]
    assert all(n.core.state.validators.keys == tuple(sorted(keep)) and n.core.height > height + 2
               for n in _live(sim))
