"""BlockOutcome: what applying one block did, as the fold (`chainstate.py`) reports it to the core, the
effects that carry it out and the durability order that stores it."""
from __future__ import annotations

from dataclasses import dataclass, field

from exchange.chain.state.membership import MembershipTx


@dataclass
class BlockOutcome:
    """What applying one block did: the exchange's result and any validator-set change."""

    height: int
    block_id: bytes
    time_ms: int
    exchange: object                    # the application's end_block result (None until the block's end)
    membership: list[tuple[MembershipTx, str]] = field(default_factory=list)   # (tx, "applied" | reason)
    validators_changed: bool = False
    state_hash: bytes = b""          # the chain state's hash after this block (the next header's app_hash)
