"""Genesis: the first, unsigned facts of a network, hashed into its chain id.

Everything every node must agree on before the first block is here: the network name, the first
validator set, how the set may change (`max_validators`, or a pinned set), when an absent
validator may be removed, and the exchange's own parameters (markets, order TTL, ...). The chain
id is the hash of this document, so two networks founded apart, even under the same NETWORK_ID,
never mistake each other's blocks, votes or signed orders for their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exchange.chain.codec import digest
from exchange.chain.validators import ValidatorSet

DEFAULT_MAX_VALIDATORS = 7


@dataclass(frozen=True)
class Genesis:
    network_id: str
    created_ms: int
    founder: bytes                       # public key of the node that founded the network
    validators: tuple[bytes, ...]        # the first validator set
    max_validators: int = DEFAULT_MAX_VALIDATORS
    pinned: bool = False                 # True: the set never changes (VALIDATORS was configured)
    absent_blocks: int = 20              # a validator missing from this many recorded commits ...
    absent_ms: int = 30_000              # ... spanning at least this much block time may be removed
    snapshot_interval: int = 500         # every this many heights the state hash covers a full snapshot
    exchange: dict[str, Any] = field(default_factory=dict)   # ExchangeParams.to_wire()

    def wire(self) -> list:
        return ["exchange-node/genesis/v1", self.network_id, self.created_ms, self.founder, list(self.validators),
                self.max_validators, self.pinned, self.absent_blocks, self.absent_ms,
                sorted(self.exchange.items()), self.snapshot_interval]

    @classmethod
    def from_wire(cls, data: Any) -> "Genesis":
        if type(data) is not list or len(data) != 11 or data[0] != "exchange-node/genesis/v1":
            raise ValueError("not a genesis document")
        (_, network_id, created_ms, founder, validators, max_validators, pinned, absent_blocks, absent_ms, ex,
         snapshot_interval) = data
        if not (type(network_id) is str and type(created_ms) is int and type(founder) is bytes
                and type(validators) is list and type(max_validators) is int and 1 <= max_validators <= 100
                and type(pinned) is bool and type(absent_blocks) is int and type(absent_ms) is int
                and type(ex) is list and type(snapshot_interval) is int and 1 <= snapshot_interval <= 10**9):
            raise ValueError("malformed genesis document")
        ValidatorSet(0, validators)   # checks the keys
        return cls(network_id, created_ms, founder, tuple(validators), max_validators=max_validators, pinned=pinned,
                   absent_blocks=absent_blocks, absent_ms=absent_ms, snapshot_interval=snapshot_interval,
                   exchange={k: v for k, v in ex})

    @property
    def chain_id(self) -> str:
        return digest("exchange-node/chain-id/v1", self.wire()).hex()

    def first_validators(self) -> ValidatorSet:
        return ValidatorSet(0, self.validators)
