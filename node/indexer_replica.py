"""The indexer's replica: certified blocks applied from the genesis, so every trade it hands on was verified.

A node's answers are not believed. Each block is checked with the light client's rules (`node/light/verify.py`
`verified_header`: the validator set of its height proven from the genesis through the certified set changes, a
quorum of that set's signatures over exactly its header), its transactions against the header's hash
(`Block.from_wire`), its parent against the block before; then it is applied to a `ChainState` of our own, the
state machine every node runs. The trades a block made are handed on only once the next certified header's
`app_hash` equals the state hash our replay reached after it: the certificate covers our result, not the node's
word. A node that serves an uncertified or altered block is refused by name (`Refused`); a certified header whose
state hash differs from ours (our replay or a quorum wrong) stops the indexer (`Diverged`): nothing after it is
handed on.

The replay starts at the genesis, so the node must still hold the block log from height 1 (it keeps
KEEP_BLOCKS behind its newest snapshot). It takes its own snapshots where the chain's rules do; the follower keeps
the newest in the database, and a restarted indexer resumes from it (`resume`), its state checked by the next
certified header like any other.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.results import BlockResult
from exchange.app.txs import InvalidTx, SignedTx
from exchange.app.views import View
from exchange.chain.types.blocks import Block, Commit, Malformed
from exchange.chain.state.chainstate import ChainState, decode_item
from exchange.chain.types.codec import pack, unpack
from exchange.chain.state.membership import MembershipTx
from exchange.crypto import verify as ed25519_verify
from node.light.verify import Proven, Refused, verified_header


class BlockSource(Protocol):
    """One node's public chain routes, as decoded JSON answers (raising `Refused(url, "unreachable", ...)`)."""

    url: str

    def genesis(self) -> object: ...
    def epochs(self) -> object: ...
    def blocks(self, start: int) -> object: ...


class Diverged(Exception):
    """A certified header's state hash differs from the one our replay reached: never a node's lie (it carries a
    quorum's signatures), so the indexer stops instead of trying another node."""


@dataclass(frozen=True)
class VerifiedBlock:
    """A block whose certificate was checked and whose results the next certified header vouches for."""

    height: int
    block_id: str
    time_ms: int
    trades: list[View]


def _decoded(node: str, item: object) -> tuple[Block, Commit]:
    if not isinstance(item, dict):
        raise Refused(node, "malformed", "a block it served is not a JSON object")
    try:
        block = Block.from_wire(unpack(base64.b64decode(str(item.get("block")), validate=True),
                                       max_bytes=64 * 1024 * 1024))
        commit = Commit.from_wire(unpack(base64.b64decode(str(item.get("commit")), validate=True)))
    except Malformed as exc:
        if str(exc) == "txs_hash_mismatch":
            raise Refused(node, "altered_block", "a block it served holds other transactions than its header "
                                                 "names") from None
        raise Refused(node, "malformed", f"a block it served does not decode ({exc})") from None
    except (binascii.Error, ValueError):
        raise Refused(node, "malformed", "a block it served is not base64 msgpack") from None
    return block, commit


def _refused_txs(chain_id: str, txs: list[SignedTx | MembershipTx]) -> dict[int, str]:
    """The transactions of a certified block every node records as failed (a certificate orders a block, it does
    not vouch for each signature in it), by index, as the chain's block check judges them."""
    refused: dict[int, str] = {}
    for index, tx in enumerate(txs):
        if isinstance(tx, SignedTx):
            if tx.chain_id != chain_id:
                refused[index] = "wrong_chain"
            elif not tx.signature_valid():
                refused[index] = "bad_signature"
        elif not tx.signature_valid(chain_id, ed25519_verify):
            refused[index] = "bad_signature"
    return refused


class Replica:
    """The chain replayed from its genesis, one verified block at a time (sans-I/O: answers in, blocks out)."""

    def __init__(self, chain: Proven) -> None:
        self.chain = chain
        params = ExchangeParams.from_wire(chain.genesis.exchange)
        self.state = ChainState(chain.genesis, ExchangeState(params, chain.chain_id))
        self.pending: VerifiedBlock | None = None      # applied, waiting for the next header to vouch for it

    @property
    def next_height(self) -> int:
        return self.state.height + 1

    def resume(self, data: bytes) -> None:
        """Start from a snapshot this replica took (kept in the database): the next certified header checks it,
        since its `app_hash` must equal the state restored. Raises ValueError for bytes that do not restore."""
        params, chain_id = ExchangeParams.from_wire(self.chain.genesis.exchange), self.chain.chain_id
        self.state.restore(data, lambda app: ExchangeState.restore(params, app, chain_id))
        self.pending = None

    def take_snapshot(self) -> tuple[int, bytes] | None:
        """The snapshot the chain's rules had this replay take at its last snapshot height, once, or None."""
        taken, self.state.last_snapshot = self.state.last_snapshot, None
        ready = self.state.snapshots.take_ready()          # a network founded with a snapshot lag
        return ready[-1] if ready else taken

    def take(self, node: str, item: object) -> VerifiedBlock | None:
        """Check and apply one block of a `/chain/blocks` answer; the block before it, now vouched for by its
        certified header, or None. Raises Refused (naming `node`) and leaves the replica as it was if the block
        fails a check."""
        block, commit = _decoded(node, item)
        header = block.header
        if header.height != self.next_height:
            raise Refused(node, "wrong_height", f"it served height {header.height} where {self.next_height} was asked")
        verified_header(node, self.chain, {"header": base64.b64encode(pack(header.wire())).decode(),
                                           "commit": base64.b64encode(pack(commit.wire())).decode()})
        if header.prev_id != self.state.last_block_id:
            raise Refused(node, "wrong_parent", f"its certified block {header.height} does not follow block "
                                                f"{self.state.height} as this replay holds it")
        if header.app_hash != self.state.hash:
            raise Diverged(f"the certified header at height {header.height} names state {header.app_hash.hex()[:16]}, "
                           f"this replay reached {self.state.hash.hex()[:16]} after height {self.state.height}")
        try:
            txs = [decode_item(tx) for tx in block.txs]
        except (Malformed, InvalidTx) as exc:
            raise Refused(node, "malformed", f"a transaction of its block {header.height} does not decode "
                                             f"({exc})") from None
        vouched, self.pending = self.pending, None
        outcome = self.state.apply_block(block, txs, _refused_txs(self.chain.chain_id, txs))
        result = outcome.exchange
        trades = result.trades if isinstance(result, BlockResult) else []
        self.pending = VerifiedBlock(header.height, block.id.hex(), header.time_ms, trades)
        return vouched
