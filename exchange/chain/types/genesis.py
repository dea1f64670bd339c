"""Genesis: the first, unsigned facts of a network, hashed into its chain id.

Everything every node must agree on before the first block is here: the network name, the first
validator set, how the set may change (`max_validators`, `seat_rule`, or a pinned set), when an
absent validator is jailed, and the exchange's own parameters (markets,
order TTL, ...). The chain id is the hash of this document, so two networks founded apart, even
under the same NETWORK_ID, never mistake each other's blocks, votes or signed orders for their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exchange.chain.types.codec import digest
from exchange.crypto import PUBLIC_KEY_BYTES
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire

DEFAULT_MAX_VALIDATORS = 7
SEAT_RULES = ("bft", "any")     # bft: the set grows only to sizes 3f + 1 (1, 4, 7, ...); any: one seat at a time
GENESIS_VERSION = "exchange-node/genesis/v2"
MAX_SNAPSHOT_MIN_MS = 86_400_000     # a day: snapshots further apart would leave joiners and restarts far behind


# The exchange's parameters as the genesis carries them (ExchangeParams.to_wire()): a msgpack map whose values
# have no static type here; ExchangeParams.from_wire checks them where they are read.
ParamsWire = dict[str, Any]


@dataclass(frozen=True)
class Genesis:
    network_id: str
    created_ms: int
    founder: bytes                       # public key of the node that founded the network
    validators: tuple[bytes, ...]        # the first validator set
    max_validators: int = DEFAULT_MAX_VALIDATORS
    pinned: bool = False                 # True: the set never changes (VALIDATORS was configured)
    absent_blocks: int = 100             # a validator neither signing nor proposing in this many blocks ...
    absent_ms: int = 60_000              # ... spanning at least this much block time is jailed (seat kept in standby)
    snapshot_interval: int = 500         # every this many heights the state is snapshotted ...
    snapshot_lag: int = 0                # ... and the state hash this many heights later covers it (0: at once)
    snapshot_min_ms: int = 0             # ... but no sooner than this much block time after the last (0: by heights)
    exchange: ParamsWire = field(default_factory=dict)   # ExchangeParams.to_wire()
    admission_key: bytes = b""           # unused (b""): join tokens are granted in the log; kept so ids stay stable
    seat_rule: str = "bft"

    def wire(self) -> Wire:
        """13 items, 14 with a snapshot lag, 15 with a snapshot's least block time apart: a network founded
        before either existed keeps its chain id."""
        lag: Wire = ([self.snapshot_lag, self.snapshot_min_ms] if self.snapshot_min_ms
                     else [self.snapshot_lag] if self.snapshot_lag else [])
        return [GENESIS_VERSION, self.network_id, self.created_ms, self.founder, list(self.validators),
                self.max_validators, self.pinned, self.absent_blocks, self.absent_ms,
                sorted(self.exchange.items()), self.snapshot_interval, self.admission_key, self.seat_rule, *lag]

    @classmethod
    def from_wire(cls, data: object) -> "Genesis":
        if type(data) is list and data and data[0] == "exchange-node/genesis/v1":
            raise ValueError("a genesis of protocol v1 (seats taken by joining): this version grants seats; "
                             "move the data directory aside to start afresh")
        if type(data) is not list or len(data) not in (13, 14, 15) or data[0] != GENESIS_VERSION:
            raise ValueError("not a genesis document")
        (_, network_id, created_ms, founder, validators, max_validators, pinned, absent_blocks, absent_ms, ex,
         snapshot_interval, admission_key, seat_rule) = data[:13]
        snapshot_lag = data[13] if len(data) >= 14 else 0
        snapshot_min_ms = data[14] if len(data) == 15 else 0
        if not (type(network_id) is str and type(created_ms) is int and type(founder) is bytes
                and type(validators) is list and type(max_validators) is int and 1 <= max_validators <= 100
                and type(pinned) is bool and type(absent_blocks) is int and type(absent_ms) is int
                and type(ex) is list and type(snapshot_interval) is int and 1 <= snapshot_interval <= 10**9
                and type(admission_key) is bytes and len(admission_key) in (0, PUBLIC_KEY_BYTES)
                and seat_rule in SEAT_RULES and type(snapshot_lag) is int
                and (len(data) == 13 or (len(data) == 15 and snapshot_lag == 0) or 1 <= snapshot_lag < snapshot_interval)
                and type(snapshot_min_ms) is int and (len(data) < 15 or 1 <= snapshot_min_ms <= MAX_SNAPSHOT_MIN_MS)):
            raise ValueError("malformed genesis document")
        ValidatorSet(0, validators)   # checks the keys
        return cls(network_id, created_ms, founder, tuple(validators), max_validators=max_validators, pinned=pinned,
                   absent_blocks=absent_blocks, absent_ms=absent_ms, snapshot_interval=snapshot_interval,
                   snapshot_lag=snapshot_lag, snapshot_min_ms=snapshot_min_ms, exchange={k: v for k, v in ex},
                   admission_key=admission_key, seat_rule=seat_rule)

    @property
    def chain_id(self) -> str:
        return digest("exchange-node/chain-id/v2", self.wire()).hex()

    def first_validators(self) -> ValidatorSet:
        return ValidatorSet(0, self.validators)

    def size_allowed(self, size: int) -> bool:
        """May the set grow to `size` seats? Under `bft` only to 3f + 1 (each such size tolerates one more
        faulty validator than the one before; 2, 3, 5, 6 tolerate no more than the size below them and need
        more of their validators up)."""
        if not 1 <= size <= self.max_validators:
            return False
        return self.seat_rule == "any" or size % 3 == 1
