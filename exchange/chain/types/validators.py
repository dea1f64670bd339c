"""ValidatorSet: who orders events at one height, and how many of them make a quorum.

Every validator has one vote. With n validators the set tolerates f = (n - 1) // 3 Byzantine ones
and a quorum is any floor(2n/3) + 1 of them (more than two thirds, as in Tendermint/CometBFT):
two quorums always share at least f + 1 validators, so at least one honest validator is in both
and two conflicting blocks can never both gather a quorum. `skip` is f + 1: that many validators
at a higher round include at least one honest one (the round-skip rule of Algorithm 1, line 55).

A set is versioned by its epoch; it only changes through the ordered log (membership
transactions applied by the state machine), so every node derives the same set at every height.
"""
from __future__ import annotations

from typing import Iterable, TypedDict

from exchange.chain.types.codec import digest
from exchange.crypto import PUBLIC_KEY_BYTES, node_id_for
from exchange.wire import Wire


class ValidatorSummary(TypedDict):
    """A validator set as /status shows it."""

    epoch: int
    size: int
    quorum: int
    faults_tolerated: int
    validators: list[str]       # node ids


class ValidatorSet:
    __slots__ = ("epoch", "keys", "index", "node_ids", "quorum", "skip", "hash")

    def __init__(self, epoch: int, keys: Iterable[bytes]) -> None:
        ordered = sorted(set(keys))
        if not ordered:
            raise ValueError("a validator set needs at least one validator")
        if any(type(k) is not bytes or len(k) != PUBLIC_KEY_BYTES for k in ordered):
            raise ValueError("validator keys are 32-byte Ed25519 public keys")
        self.epoch = epoch
        self.keys: tuple[bytes, ...] = tuple(ordered)
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.node_ids = tuple(node_id_for(k) for k in self.keys)
        n = len(self.keys)
        self.quorum = 2 * n // 3 + 1
        self.skip = (n - 1) // 3 + 1
        self.hash = digest("exchange-node/validators/v1", [epoch, list(self.keys)])

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    @property
    def faults(self) -> int:
        return (len(self.keys) - 1) // 3

    def proposer(self, height: int, round_: int) -> bytes:
        """The proposer of (height, round): a rotation over the whole set, which nobody can bias (it reads no
        record a proposer chose, such as which precommits it put in its block). An absent validator costs its
        turn a propose timeout until it is jailed."""
        return self.keys[(height + round_) % len(self.keys)]

    def upcoming_proposers(self, height: int, count: int) -> tuple[str, ...]:
        """Node ids of the round-0 proposers of the `count` heights after `height`, without repeats: where a
        follower hands its transactions, so the block's author has them one hop after they were placed
        even when the follower's view lags the validators' by a height or two."""
        chosen: list[str] = []
        for offset in range(1, min(count, len(self.keys)) + 1):
            node_id = self.node_ids[(height + offset) % len(self.keys)]
            if node_id not in chosen:
                chosen.append(node_id)
        return tuple(chosen)

    def with_added(self, *keys: bytes) -> "ValidatorSet":
        return ValidatorSet(self.epoch + 1, (*self.keys, *keys))

    def with_removed(self, key: bytes) -> "ValidatorSet":
        return ValidatorSet(self.epoch + 1, (k for k in self.keys if k != key))

    def replaced(self, key: bytes, successor: bytes | None) -> "ValidatorSet":
        """Without `key`, with `successor` (if any) in its seat."""
        rest = [k for k in self.keys if k != key]
        return ValidatorSet(self.epoch + 1, rest + [successor] if successor is not None else rest)

    def wire(self) -> Wire:
        return [self.epoch, list(self.keys)]

    @classmethod
    def from_wire(cls, data: object) -> "ValidatorSet":
        if type(data) is not list or len(data) != 2 or type(data[0]) is not int or type(data[1]) is not list:
            raise ValueError("a validator set is [epoch, [keys]]")
        return cls(data[0], data[1])

    def summary(self) -> ValidatorSummary:
        return {"epoch": self.epoch, "size": len(self.keys), "quorum": self.quorum, "faults_tolerated": self.faults,
                "validators": list(self.node_ids)}

    def __repr__(self) -> str:
        return f"ValidatorSet(epoch={self.epoch}, n={len(self.keys)}, quorum={self.quorum})"
