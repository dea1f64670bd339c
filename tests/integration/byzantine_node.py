"""A real `exchange-node` whose chain lies, for attack tests: `python -m tests.integration.byzantine_node start ...`
with BYZANTINE set to a comma list of behaviours:

- `seat_grab`: every block it proposes also seats a key only it holds (a `promote` of a node nobody
  approved, and a `join` "signed" by its own key as if that were a join token the log granted);
- `equivocate`: half of the validators get, for each of its votes, a different vote, signed (its proposals
  too: a block with another time, signed), the other half the real one; from EQUIVOCATE_AFTER_BLOCKS
  (default 0) blocks after it first holds a seat, so a test can watch its other lies first.
- `late`: honest, but every chain message it sends leaves LATE_SECONDS (default 0.1) late, as from a
  validator on a slow link.
- `replay`: keeps every signed membership request (approvals, leaves, joins, grants) of the blocks it
  applies and re-sends them all to every validator every REPLAY_SECONDS (default 1): what a follower
  replaying old signatures can make of them.
- `phantom_joins`: holding a join token, asks standby seats for PHANTOMS (default 64) fresh keys nobody runs,
  a few each tick, instead of one for itself.
- `mute_when_seated`: an honest standby in every way (it follows the chain, its `alive`s are true) until it holds
  a seat: then its votes and proposals are never sent.
- `height_liar`: a standby that claims height 2^62 in its hellos and heartbeats and whose `alive`s name a
  block far ahead of the chain (its real ones are never sent).
- `smuggle`: every block it proposes also holds the signed transactions in SMUGGLE_FILE (JSON lines, as clients
  post them; those not expired), which no mempool would take: what the state machine alone must refuse.
Everything it signs is signed with its genuine node key: what honest nodes must refuse is what it says.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any, cast

from config import Settings
from exchange.app.txs import SignedTx
from exchange.chain.types.blocks import Block, Header, Proposal, Vote
from exchange.chain.consensus.block_builder import BlockBuilder
from exchange.chain.core import ChainCore
from exchange.chain.state.chainstate import ChainState
from exchange.chain.effects import SendValidators
from exchange.chain.seats.seat_requests import SeatRequests
from exchange.crypto import SigningKey
from exchange.chain.state.membership import Alive, Approve, Grant, Join, Leave, MembershipTx, Promote
from node.app import ExchangeNode
from node.chain_network import P2PChainNetwork
from node.cli.main import main

GRABBED = SigningKey(hashlib.sha256(b"a key only the byzantine node holds").digest())


def _seat_grab() -> None:
    original = BlockBuilder._membership_txs

    def membership_txs(self: BlockBuilder, time_ms: int) -> list[MembershipTx]:
        honest = original(self, time_ms)
        if any(tx.changes_set for tx in honest):
            return honest
        core = cast(ChainCore, self.core)     # the builder's narrow view of it does not sign
        own_join = Join.create(core.chain_id, GRABBED.public_key, core.public_key, core.state.height, core.sign)
        return [*honest, own_join, Promote((GRABBED.public_key,))]

    BlockBuilder._membership_txs = membership_txs      # type: ignore[method-assign]


def _conflicting(message: dict, chain_id: str, key: bytes, sign: Any) -> dict:
    body = message.get("body")
    if message.get("type") == "chain_vote":
        vote = Vote.from_wire(body)
        if vote.validator != key:
            return message
        other = None if vote.block_id is not None else hashlib.sha256(b"other" + vote.sig).digest()
        return {**message, "body": Vote.create(chain_id, vote.kind, vote.height, vote.round, other, key, sign).wire()}
    if message.get("type") == "chain_proposal":
        proposal = Proposal.from_wire(body)
        if proposal.proposer != key:
            return message
        h = proposal.block.header
        block = Block(Header(h.chain_id, h.height, h.time_ms + 1, h.prev_id, h.proposer, h.app_hash,
                             h.validators_hash, h.txs_hash, h.last_commit), proposal.block.txs)
        return {**message, "body": Proposal.create(chain_id, proposal.height, proposal.round, proposal.valid_round,
                                                   block, key, sign).wire()}
    return message


def _equivocate(after_blocks: int) -> None:
    original = ExchangeNode.__init__
    seated_at: list[int] = []

    def init(self: ExchangeNode, settings: Settings) -> None:
        original(self, settings)
        network, identity, chain = self.chain_network, self.identity, self.chain
        send = network.send

        def lying_send(node_id: str, message: dict) -> None:
            core = chain.core
            if core is not None and core.is_validator and not seated_at:
                seated_at.append(core.height)
            lying = bool(seated_at) and core is not None and core.height >= seated_at[0] + after_blocks
            others = sorted(n for n in (core.state.validators.node_ids if core else ()) if n != identity.node_id)
            if lying and core is not None and node_id in others and others.index(node_id) % 2 == 1:
                message = _conflicting(message, core.chain_id, identity.public_key_bytes, identity.sign)
            send(node_id, message)

        network.send = lying_send      # type: ignore[method-assign]

    ExchangeNode.__init__ = init  # type: ignore[method-assign]


def _late(delay: float) -> None:
    original = ExchangeNode.__init__

    def init(self: ExchangeNode, settings: Settings) -> None:
        original(self, settings)
        network = self.chain_network
        send, broadcast = network.send, network.broadcast

        def late_send(node_id: str, message: dict) -> None:
            asyncio.get_running_loop().call_later(delay, send, node_id, message)

        def late_broadcast(message: dict) -> None:
            asyncio.get_running_loop().call_later(delay, broadcast, message)

        network.send = late_send              # type: ignore[method-assign]
        network.broadcast = late_broadcast    # type: ignore[method-assign]

    ExchangeNode.__init__ = init  # type: ignore[method-assign]


def _replay(every: float) -> None:
    original = ExchangeNode.__init__

    def init(self: ExchangeNode, settings: Settings) -> None:
        original(self, settings)
        chain, network = self.chain, self.chain_network
        seen: dict[str, MembershipTx] = {}
        apply_block = ChainState.apply_block

        def keeping(state: ChainState, block: Block, *args: Any, **kwargs: Any) -> Any:
            outcome = apply_block(state, block, *args, **kwargs)
            for tx, _ in outcome.membership:
                if isinstance(tx, (Approve, Leave, Join, Grant)):
                    seen[tx.id] = tx
            return outcome

        ChainState.apply_block = keeping    # type: ignore[method-assign,assignment]

        async def resend() -> None:
            while True:
                await asyncio.sleep(every)
                core = chain.core
                if core is None:
                    continue
                for node_id in core.state.validators.node_ids:
                    for tx in list(seen.values()):
                        network.send(node_id, {"type": "chain_membership", "body": tx.wire()})

        original_start = chain.start

        async def start() -> None:
            await original_start()
            asyncio.get_running_loop().create_task(resend())

        chain.start = start     # type: ignore[method-assign]

    ExchangeNode.__init__ = init  # type: ignore[method-assign]


def _phantom_joins(count: int) -> None:
    sent: list[bytes] = []

    def phantoms(self: SeatRequests, now: float) -> None:
        core, token = self.core, self.join_token
        if token is None or core.state.height == 0 or len(sent) >= count:
            return
        for _ in range(4):
            key = SigningKey(os.urandom(32)).public_key
            sent.append(key)
            tx = Join.create(core.chain_id, key, token.public_key, core.state.height, token.sign)
            core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))

    SeatRequests.maybe_join = phantoms      # type: ignore[method-assign]


def _mute_when_seated() -> None:
    original = ExchangeNode.__init__

    def init(self: ExchangeNode, settings: Settings) -> None:
        original(self, settings)
        chain, network = self.chain, self.chain_network
        send, broadcast = network.send, network.broadcast

        def muted(message: dict) -> bool:
            core = chain.core
            return core is not None and core.is_validator and message.get("type") in ("chain_vote", "chain_proposal")

        def mute_send(node_id: str, message: dict) -> None:
            if not muted(message):
                send(node_id, message)

        def mute_broadcast(message: dict) -> None:
            if not muted(message):
                broadcast(message)

        network.send = mute_send                # type: ignore[method-assign]
        network.broadcast = mute_broadcast      # type: ignore[method-assign]

    ExchangeNode.__init__ = init  # type: ignore[method-assign]


def _height_liar() -> None:
    fields = P2PChainNetwork._chain_fields

    def lying_fields(self: P2PChainNetwork) -> dict[str, object]:
        honest = fields(self)["chain"]
        assert isinstance(honest, list)
        return {"chain": [honest[0], (1 << 62) - 1]}

    P2PChainNetwork._chain_fields = lying_fields       # type: ignore[method-assign]

    def lying_alive(self: SeatRequests, now: float) -> None:
        core = self.core
        if core.public_key not in core.state.seats.standby or now < self._next_alive:
            return
        self._next_alive = now + core.config.alive_interval
        tx = Alive.create(core.chain_id, core.public_key, core.state.height + 1_000_000, os.urandom(32), core.sign)
        core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))

    SeatRequests.maybe_alive = lying_alive      # type: ignore[method-assign]


def _smuggle(path: str) -> None:
    original = BlockBuilder._membership_txs

    def membership_txs(self: BlockBuilder, time_ms: int) -> list[MembershipTx]:
        honest = original(self, time_ms)
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return honest
        smuggled = [SignedTx.from_json(json.loads(line)) for line in lines if line.strip()]
        # the builder encodes a SignedTx in this list as it does the mempool's (block_builder.py encode_item)
        return [*honest, *(tx for tx in smuggled if time_ms < tx.expires)]  # type: ignore[list-item]

    BlockBuilder._membership_txs = membership_txs      # type: ignore[method-assign]


if __name__ == "__main__":
    behaviours = set(os.environ.get("BYZANTINE", "").split(","))
    if "seat_grab" in behaviours:
        _seat_grab()
    if "equivocate" in behaviours:
        _equivocate(int(os.environ.get("EQUIVOCATE_AFTER_BLOCKS", "0")))
    if "late" in behaviours:
        _late(float(os.environ.get("LATE_SECONDS", "0.1")))
    if "replay" in behaviours:
        _replay(float(os.environ.get("REPLAY_SECONDS", "1")))
    if "phantom_joins" in behaviours:
        _phantom_joins(int(os.environ.get("PHANTOMS", "64")))
    if "mute_when_seated" in behaviours:
        _mute_when_seated()
    if "height_liar" in behaviours:
        _height_liar()
    if "smuggle" in behaviours:
        _smuggle(os.environ["SMUGGLE_FILE"])
    main()
