"""A recovery's rules every node checks, with no state of its own: the round its precommits take, what a
recovery block must carry (`carried_problem`), and how a recovery is shown (`RecoveryStatus`). The part that
runs a recovery is `halt.py`; block checks and epoch proofs need only these."""
from __future__ import annotations

from typing import NotRequired, TypedDict

from exchange.chain.state.membership import Recover
from exchange.chain.types.blocks import MAX_ROUND, PRECOMMIT, Block

RECOVERY_ROUND = MAX_ROUND          # the round of a recovery block's precommits


class RecoveryStatus(TypedDict):
    """A recovery as /status and `exchange-node validators recover` show it."""

    height: int                     # the height the recovery block takes
    keep: list[str]                 # the node ids of the new set
    state: str                      # waiting_for_block, offered, consented; recovered or dropped (an answer)
    signed: list[str]
    missing: list[str]
    builder: NotRequired[str]       # the member that builds the block (while it is pending)
    block_id: NotRequired[str]      # the recovery block, once built
    carried_lock_round: NotRequired[int]


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
