"""What the chain core's parts see of the core: the seam between `ChainCore` and the parts it is made of.

`ChainCore` (core.py) owns the state, the consensus instance and the effects; its parts (block checks,
block building, block sync, transaction intake, the halt recovery) each own their own bookkeeping and reach
the rest only through this Protocol, so what a part may touch is written down in one place and checked by
mypy where the core hands itself to a part.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from exchange.chain.types.blocks import Block, Commit
    from exchange.chain.state.chainstate import ChainState
    from exchange.chain.config import CoreConfig
    from exchange.chain.effects import ChainEffect
    from exchange.chain.types.genesis import Genesis
    from exchange.chain.mempool.pool import Mempool
    from exchange.chain.consensus.tendermint import Tendermint


class BlockSource(Protocol):
    """Committed blocks this node can serve to peers that are catching up."""

    def get(self, height: int) -> tuple[Block, Commit] | None: ...


class CoreView(Protocol):
    """The core as its parts use it. Times are seconds (`now`) and milliseconds (`now_ms`) of the call
    being handled; effects leave only through `emit` and `penalize`."""

    genesis: Genesis
    chain_id: str
    public_key: bytes
    node_id: str
    state: ChainState
    mempool: Mempool
    consensus: Tendermint
    blocks: BlockSource
    counters: dict[str, int]
    last_commit: Commit | None
    last_commit_at: float
    halted: str | None
    rng: random.Random
    now: float
    now_ms: int

    @property
    def config(self) -> CoreConfig: ...

    @property
    def is_validator(self) -> bool: ...

    def upcoming_proposers(self) -> tuple[str, ...]: ...
    def set_now(self, now: float) -> None: ...

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, key: bytes, sig: bytes, data: bytes) -> bool: ...

    def emit(self, effect: ChainEffect) -> None: ...

    def penalize(self, peer: str | None, points: float, reason: str) -> None: ...

    def network_of(self, node_id: str) -> str | None: ...

    def halt(self, reason: str) -> None: ...

    def apply(self, block: Block, commit: Commit, *, announce: bool, refused: dict[int, str] | None = None) -> None: ...

    def start_height(self, now: float) -> None: ...

    def tx_waiting(self, lane: str, now: float) -> None: ...

    def drain(self, now: float) -> None: ...

    def quorum_present(self, now: float) -> bool: ...

    def heard_validator(self, sender: str | None, now: float) -> None: ...
