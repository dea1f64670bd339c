"""The typed effects the chain's sans-I/O parts ask their driver to carry out.

`Tendermint` emits `ConsensusEffect`s to `ChainCore`, which turns them into `ChainEffect`s (adding the
mempool, catch-up and membership's own) for `ChainService.pump`, the driver that does the I/O. Each is
a frozen dataclass, and each driver `match`es them with `assert_never` in its last case, so a new
effect nobody carries out is a type error rather than a silently dropped tuple.

The durability order every driver keeps, over one batch (`EffectBatch`) taken in emission order:

1. A `WalRecord` is durable before any effect emitted after it leaves the node. Consecutive records
   may share one fsync, and so may records with only messages between them (the messages then wait for
   the later records too); a vote or proposal whose record could not be written is not sent at all.
2. A `Committed` block is durable (stored) before anything it lets out: the `Broadcast` of its
   decision, answers to waiting clients, the stream, the removal of its transactions from the outbox
   (`OwnDone`).
3. Everything else is carried out in emission order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Union

if TYPE_CHECKING:
    from exchange.chain.types.blocks import Block, Commit, Proposal, Vote
    from exchange.chain.state.outcome import BlockOutcome
    from exchange.app.txs import SignedTx
    from exchange.wire import Wire

# A chain message on the wire: {"type": name, "body": wire form}. Its body is msgpack-able data whose
# shape each receiver checks (`blocks.Malformed`) before acting on it.
ChainMessage = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WalRecord:
    """A consensus write-ahead record: durable before any later effect leaves the node."""
    record: Wire


@dataclass(frozen=True, slots=True)
class SendConsensus:
    """Our proposal or vote (or one we relay), to every validator."""
    message: "Proposal | Vote"


@dataclass(frozen=True, slots=True)
class Decide:
    """The height is decided (line 49 of the algorithm): `commit` certifies `block`."""
    block: "Block"
    commit: "Commit"


@dataclass(frozen=True, slots=True)
class Evidence:
    """A validator signed two different votes for one (height, round, kind)."""
    first: "Vote"
    second: "Vote"


ConsensusEffect = Union[WalRecord, SendConsensus, Decide, Evidence]


@dataclass(frozen=True, slots=True)
class SendValidators:
    """To every validator of the current set but us."""
    message: ChainMessage


@dataclass(frozen=True, slots=True)
class SendFollowers:
    """To the followers linked to us (a bounded number): our proposals and precommits, so they decide from the
    precommits (`precommit_quorum.py`) without waiting for a decision message."""
    message: ChainMessage


@dataclass(frozen=True, slots=True)
class SendTo:
    """To one node."""
    node_id: str
    message: ChainMessage


@dataclass(frozen=True, slots=True)
class Broadcast:
    """To the whole network (a certified block's decision): held until that block is durable."""
    message: ChainMessage


PENALTY_INVALID = 50.0      # a certificate, signature or block that cannot be valid: only its sender made it
PENALTY_MALFORMED = 20.0    # bytes that do not decode as the message they claim to be


@dataclass(frozen=True, slots=True)
class Penalize:
    """A neighbour sent what only its sender could have made invalid."""
    node_id: str
    points: float
    reason: str


@dataclass(frozen=True, slots=True)
class HoldReading:
    """A neighbour spent its budget: read nothing more from it for `seconds` (what it sends meanwhile waits
    in TCP, costing us nothing to drop)."""
    node_id: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Committed:
    """A block is final: store it, answer waiters, publish. `holds_own`: it holds one of our own
    transactions (a follower syncs it before that order's answer)."""
    block: "Block"
    commit: "Commit"
    outcome: "BlockOutcome"
    holds_own: bool


@dataclass(frozen=True, slots=True)
class Forward:
    """A follower hands a transaction to the validators (RPC): to each of `proposers` it is linked with (the
    authors of the next blocks), or else to one validator the router picks."""
    tx: "SignedTx"
    proposers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OwnDone:
    """One of our own pending transactions left the outbox (`committed` or `expired`)."""
    tx_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Halt:
    """Continuing would risk divergence: stop serving orders."""
    reason: str


@dataclass(frozen=True, slots=True)
class NeedSnapshot:
    """Peers no longer hold the blocks we lack: start again from `node_id`'s certified snapshot."""
    node_id: str


ChainEffect = Union[WalRecord, SendValidators, SendFollowers, SendTo, Broadcast, Penalize, HoldReading, Committed, Forward,
                    OwnDone, Halt, NeedSnapshot]


@dataclass(frozen=True, slots=True)
class EffectBatch:
    """What one step of the core asks for, in emission order; carried out under the module's rules."""
    effects: tuple[ChainEffect, ...]

    def __iter__(self) -> Iterator[ChainEffect]:
        return iter(self.effects)

    def __len__(self) -> int:
        return len(self.effects)
