"""Real processes: a peer that forges for accounts and validators it does not hold is refused and banned.

An authenticated raw peer (tests/wire.py) links to a validator and sends (1) an order for another
node's account, signed with its own key, gossiped as a validator's transaction would be, (2) a vote in
the name of a validator, with a signature that is not that validator's, and (3) a certified block whose
commit signatures are made up. None of it changes any book; the honest nodes keep finalising and keep
each other (nobody honest is penalised), and the forger is banned.
"""
from __future__ import annotations

import asyncio
import os
import time

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.crypto import SigningKey
from exchange.app.txs import NewOrderOp, sign_tx
from node.identity import NodeIdentity
from tests.harness import converged, wait_until
from tests.wire import RawPeer

FAST = {"heartbeat_interval": 0.2}


def envelope(kind: str, origin: str, dst: str, **fields) -> dict:
    return {"type": kind, "id": os.urandom(12).hex(), "origin": origin, "dst": dst, "ts": time.time(), "hops": 0,
            **fields}


def peer_record(node, node_id: str) -> dict | None:
    return next((p for p in node.peers() if p["node_id"] == node_id), None)


def test_forged_orders_votes_and_certificates_are_refused_and_the_forger_banned(cluster):
    a, b = cluster.chain(2, seat_rule="any", **FAST)
    status, placed = a.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "100", "qty": "2"})
    assert status == 201
    alice = placed["order"]["account"]                   # a's default account: only a holds its key
    chain_id = a.status()["chain_id"]
    mallory = NodeIdentity.generate()
    thief = SigningKey(os.urandom(32))
    host, port = b.p2p_address.rsplit(":", 1)

    async def attack() -> str | None:
        peer = await RawPeer.connect(host, int(port))
        await peer.handshake(mallory)
        # (1) an order in alice's name, signed by another key
        forged = sign_tx(thief.sign, bytes.fromhex(alice), chain_id, "stolen", int(time.time() * 1000) + 60_000,
                         [NewOrderOp.parse("BTC-USD", "sell", "market", None, "2", None)])
        peer.send(envelope("chain_tx", mallory.node_id, b.node_id, body=forged.wire()))
        # (2) a vote in a's name with a signature a never made
        height = b.status()["height"] + 1
        fake_vote = Vote(PRECOMMIT, height, 0, os.urandom(32), bytes.fromhex(_validator_key(a)), os.urandom(64))
        peer.send(envelope("chain_vote", mallory.node_id, b.node_id, body=fake_vote.wire()))
        # (3) a "certified" block whose commit is made up
        header = Header(chain_id, height, int(time.time() * 1000), os.urandom(32), bytes.fromhex(_validator_key(a)),
                        os.urandom(32), os.urandom(32), Block.txs_hash([]), None)
        block = Block(header, [])
        commit = Commit(height, 0, block.id, ((0, os.urandom(64)), (1, os.urandom(64))))
        peer.send({"type": "chain_decision", "id": block.id.hex(), "origin": mallory.node_id, "ts": time.time(),
                   "hops": 0, "body": [block.wire(), commit.wire()]})
        reason, _ = await peer.until_goodbye(5.0)
        return reason

    assert asyncio.run(attack()) == "banned"
    record = peer_record(b, mallory.node_id)
    assert record is not None and record["status"] == "banned"
    status, after = a.api("POST", "/orders", {"market": "BTC-USD", "side": "sell", "price": "101", "qty": "1"})
    assert status == 201, after
    wait_until(lambda: converged([a, b]), 10)
    for node in (a, b):
        book = node.get("/book/BTC-USD")
        assert book["bids"] == [["100.00", "2.0000"]] and book["asks"] == [["101.00", "1.0000"]]
        assert node.get("/trades/BTC-USD")["trades"] == []
        assert not [p for p in node.peers() if p["node_id"] in (a.node_id, b.node_id) and p["penalty"] > 0]


def _validator_key(node) -> str:
    """A validator's public key, from the chain's view of its node id (the hello carries only ids)."""
    return node.get("/status")["validator_keys"][node.node_id]
