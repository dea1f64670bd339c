"""How a state root is tied to a certified header: the header of height h + 1 carries the chain state's hash after
block h, the digest of [h, block h's id, the application's hash, the validator set, the seats' hash, the snapshot
digest], and the application's hash is sha256(domain, results chain, state root) (`exchange/app/commitment.py`).

A node sends the parts (`anchor_of`); a client recomputes the hash from them and compares it with the header a
quorum signed (`anchored_root`), so a state root it did not certify is refused.
"""
from __future__ import annotations

from exchange.app.commitment import app_hash
from exchange.chain.types.blocks import Header
from exchange.chain.state.chainstate import STATE_DOMAIN, ChainState
from exchange.chain.types.codec import digest
from exchange.wire import Wire


class Unanchored(Exception):
    """The parts do not hash to the certified header's state hash."""


def anchor_of(state: ChainState, results_chain: bytes, state_root: bytes) -> Wire:
    """The parts of the chain state's hash after its last block, the application's hash given as its two parts."""
    # the chain state's own preimage, so the order of its items is written in one place
    height, last_id, committed, validators, seats, snapshot = state._hash_preimage()
    if committed != app_hash(results_chain, state_root) or digest(STATE_DOMAIN, state._hash_preimage()) != state.hash:
        raise Unanchored("the state hash does not cover this state root (the state moved under the proof)")
    return [height, last_id, results_chain, state_root, validators, seats, snapshot]


def anchored_root(header: Header, anchor: object) -> tuple[int, bytes]:
    """(height, state root) the parts prove under `header` (the header of that height + 1); raises Unanchored."""
    if not (isinstance(anchor, list) and len(anchor) == 7):
        raise Unanchored("the anchor is not seven parts")
    height, last_id, results_chain, state_root, validators, seats, snapshot = anchor
    if not (type(height) is int and isinstance(results_chain, bytes) and isinstance(state_root, bytes)
            and len(results_chain) == 32 and len(state_root) == 32):
        raise Unanchored("the anchor's height, results chain or state root is malformed")
    if header.height != height + 1 or header.prev_id != last_id:
        raise Unanchored(f"the anchor is the state of height {height}, the header of height {header.height} "
                         f"certifies another")
    preimage = [height, last_id, app_hash(results_chain, state_root), validators, seats, snapshot]
    if digest(STATE_DOMAIN, preimage) != header.app_hash:
        raise Unanchored(f"the state root does not hash to the state hash the header of height {header.height} carries")
    return height, state_root
