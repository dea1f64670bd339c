"""Epoch proofs: how a node that starts from a snapshot knows which validators to believe.

A validator set changes only through a membership transaction in a block, and that block is certified
by the set that decided it. Every node keeps, forever, the certified block of each change (one per
epoch: few, however long the chain runs). Replaying them from the genesis set proves the set of every
later epoch without any other history: each proof's commit is checked against the set known so far,
its header must name that set, and its single set-changing membership transaction gives the next set. A peer can
leave changes out (the node then believes an older set and catches up block by block from there, where
the next change shows up certified), but it cannot make a node believe a set nobody certified.

A recovery block (the way out of a permanent halt, `recovery.py`) is the one proof certified by the set
it installs: it is checked against the set before it by the recovery rule (a subset of it keeping more than
its tolerated faults, naming the block before), and its commit must carry every new member's precommit.
"""
from __future__ import annotations

from typing import Callable

from exchange.chain.types.blocks import Block, Commit
from exchange.chain.state.chainstate import decode_item, recovery_of
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.membership import MembershipTx, Recover
from exchange.chain.recovery.rules import RECOVERY_ROUND, carried_problem
from exchange.chain.state.seats import recovery_problem
from exchange.chain.types.validators import ValidatorSet


class BadProof(ValueError):
    """An epoch proof (or a snapshot checked with it) that cannot be valid."""


def replay_epochs(genesis: Genesis, proofs: list[tuple[Block, Commit]],
                  verify: Callable[[bytes, bytes, bytes], bool]) -> list[tuple[int, ValidatorSet]]:
    """The validator sets proven by `proofs`: [(first height it decides, set)], starting with the genesis set."""
    chain_id = genesis.chain_id
    current = genesis.first_validators()
    sets = [(1, current)]
    last_height = 0
    for block, commit in proofs:
        header = block.header
        if header.chain_id != chain_id or commit.height != header.height or commit.block_id != block.id:
            raise BadProof("an epoch proof's commit is not for its block")
        if header.height <= last_height:
            raise BadProof("epoch proofs out of order")
        txs = [decode_item(item) for item in block.txs]
        recovery = recovery_of(txs)
        if recovery is not None:
            current = _recovered(recovery, block, commit, current, chain_id, verify)
            last_height = header.height
            sets.append((header.height, current))       # the recovered set decided this block itself
            continue
        if header.validators_hash != current.hash:
            raise BadProof(f"the block at height {header.height} was not decided by the set of epoch {current.epoch}")
        if not commit.verify(chain_id, current, verify):
            raise BadProof(f"the commit at height {header.height} is not a quorum of epoch {current.epoch}")
        changes = [tx for tx in txs if isinstance(tx, MembershipTx) and tx.changes_set and not isinstance(tx, Recover)]
        if len(changes) != 1:
            raise BadProof(f"the block at height {header.height} changes no validator")
        after = changes[0].next_set(current)
        assert after is not None
        current = after
        last_height = header.height
        sets.append((header.height + 1, current))
    return sets


def _recovered(recovery: Recover, block: Block, commit: Commit, current: ValidatorSet, chain_id: str,
               verify: Callable[[bytes, bytes, bytes], bool]) -> ValidatorSet:
    header = block.header
    why = recovery_problem(recovery, current, header.height, header.prev_id)
    if why is not None:
        raise BadProof(f"the recovery at height {header.height} cannot apply: {why}")
    why = carried_problem(recovery, block)
    if why is not None or not recovery.signature_valid(chain_id, verify):
        raise BadProof(f"the recovery at height {header.height} does not carry its lock faithfully: {why}")
    after = recovery.next_set(current)
    assert after is not None
    if header.validators_hash != after.hash:
        raise BadProof(f"the recovery block at height {header.height} does not name the recovered set")
    if commit.round != RECOVERY_ROUND or len(commit.sigs) != len(after) or not commit.verify(chain_id, after, verify):
        raise BadProof(f"the recovery at height {header.height} is not signed by every member of the new set")
    return after


def set_at(sets: list[tuple[int, ValidatorSet]], height: int) -> ValidatorSet:
    """The proven set deciding `height` (the newest proven one that starts at or before it)."""
    chosen = sets[0][1]
    for start, validators in sets:
        if start <= height:
            chosen = validators
    return chosen
