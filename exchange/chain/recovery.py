"""The way out of a permanent halt: validators gone for good, the rest take the chain on.

When so many validators are gone for good (machine and data lost) that the rest can never again form a
quorum, nothing is final any more and nothing can be, since removing the gone ones needs a quorum too. The
way out is the operators' explicit decision, as etcd's `--force-new-cluster` or a Cosmos chain's
halt-and-restart from the last certified state, but inside the chain and checkable by every node:

- each surviving validator's operator runs `exchange-node validators recover --keep ID,ID,...` naming the
  same new set: a subset of the current set that keeps at least f + 1 of it (one more than the faults it
  tolerates: at least one honest validator agreed, and every quorum that could have certified a block at the
  next height shares a validator with the new set);
- the new set's designated member (`proposer(height, RECOVERY_ROUND)` of the new set) builds the *recovery
  block* at H + 1 on top of the last certified block H: its only transaction is `Recover(H, id of H, keys)`,
  its header names the new set; each member who agrees signs a PRECOMMIT for it at round RECOVERY_ROUND (a
  round Tendermint never reaches, so it cannot contradict a vote of the halted height);
- a block of the halted height may be final on validators now gone: then (with at most f faulty) a kept
  validator precommitted it, and the highest-round precommit any kept validator signed at H + 1 is for it
  (Tendermint's locks). So each kept validator hands its own highest precommit (its *lock*) to the builder,
  the recovery block carries the transactions and time of the highest-round lock (`Recover.lock`), and a
  validator signs only a recovery block carrying a lock of a round at least as high as its own (the same
  block at the same round), and at most one recovery block per carried round. Fills of such a block are
  kept exactly: same transactions, same order, same time;
- its consent is written to the WAL before it leaves, and from then on it signs nothing more at H + 1 with
  the old set; once every member of the new set signed, the block is certified by that commit and broadcast
  as any decision.

Every node, followers included, accepts the recovery block only on top of its own block H (the one the
recovery names), only from the set it itself holds at H, and only with a commit carrying every new member's
precommit. Blocks up to H are never touched: a node that holds a certified H + 1 never takes another one, so
final stays final. If the "gone" validators are alive behind a partition and their side recovers too, the
chain forks from H + 1: that is the operators' responsibility, which the CLI spells out before it signs.
"""
from __future__ import annotations

from exchange.chain.blocks import MAX_ROUND, PRECOMMIT, Block
from exchange.chain.membership import Recover
from exchange.chain.validators import ValidatorSet

RECOVERY_ROUND = MAX_ROUND          # the round of a recovery block's precommits
RESEND_INTERVAL = 1.0               # s between re-sends of a pending recovery to the other validators


class PendingRecovery:
    """A recovery block this node holds for the next height, and the new members' precommits gathered so far."""

    __slots__ = ("block", "tx", "validators", "sigs", "consented", "next_send")

    def __init__(self, block: Block, tx: Recover, validators: ValidatorSet) -> None:
        self.block, self.tx, self.validators = block, tx, validators
        self.sigs: dict[int, bytes] = {}          # index in the new set -> precommit signature
        self.consented = False                    # we signed it (never a second recovery at this height)
        self.next_send = 0.0

    @property
    def complete(self) -> bool:
        return len(self.sigs) == len(self.validators)

    def wire(self) -> list:
        return [self.block.wire(), [[i, s] for i, s in sorted(self.sigs.items())]]


def carried_problem(tx: Recover, block: Block) -> str | None:
    """Why `block` does not carry exactly what its recovery's lock says (that block's transactions and time;
    nothing without a lock), or None. The lock's signature is checked with `Recover.signature_valid`."""
    header = block.header
    if tx.lock is None:
        return None if len(block.txs) == 1 else "carries_transactions_without_a_lock"
    vote, locked = tx.lock
    if vote.kind != PRECOMMIT or vote.height != header.height or vote.block_id != locked.id \
            or vote.validator not in tx.keys:
        return "bad_lock"
    if locked.height != header.height or locked.prev_id != header.prev_id or locked.chain_id != header.chain_id:
        return "lock_not_at_this_height"
    if header.time_ms != locked.time_ms or Block.txs_hash(block.txs[1:]) != locked.txs_hash:
        return "not_the_locked_block"
    return None
