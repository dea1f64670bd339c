"""Real processes: a captured quorum can halt the chain, never forge an order or move time.

Four pinned validators and a follower; the test made every validator's key before the nodes started, so
it holds a quorum of them, as a thief of three keys would. With three validators paused (the chain frozen
at height H), it sends the running validator and the follower, over a link of its own, a block for H+1
certified by all four keys that holds an order with an all-zero signature for the follower's account,
then a block for H+2, just as certified, whose time is 24 h ahead. Both honest nodes order the first
block and record the forged order as failed (nothing of the account moves), and apply neither the
second block nor its time."""
from __future__ import annotations

import asyncio
import signal
import time

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.chain.state.chainstate import encode_item
from exchange.app.txs import NewOrderOp, sign_tx
from exchange.chain.types.validators import ValidatorSet
from node.identity import NodeIdentity
from tests.harness import Cluster, NodeProcess, wait_until
from tests.integration.chain_nodes import pinned_loopback
from tests.wire import RawPeer


def _certified(chain_id: str, height: int, time_ms: int, prev: str, app_hash: str, keys: list[NodeIdentity],
               epoch: int, last: Commit | None, txs: list) -> tuple[Block, Commit]:
    validators = ValidatorSet(epoch, [k.public_key_bytes for k in keys])
    items = [encode_item(tx) for tx in txs]
    header = Header(chain_id, height, time_ms, bytes.fromhex(prev), validators.keys[0], bytes.fromhex(app_hash),
                    validators.hash, Block.txs_hash(items), last)
    block = Block(header, items)
    return block, _commit(chain_id, height, block.id, keys, validators)


def _commit(chain_id: str, height: int, block_id: bytes, keys: list[NodeIdentity], validators: ValidatorSet) -> Commit:
    by_key = {k.public_key_bytes: k for k in keys}
    sigs = tuple((i, Vote.create(chain_id, PRECOMMIT, height, 0, block_id, key, by_key[key].sign).sig)
                 for i, key in enumerate(validators.keys))
    return Commit(height, 0, block_id, sigs)


def _send(node: NodeProcess, block: Block, commit: Commit) -> None:
    host, port = node.p2p_address.rsplit(":", 1)

    async def deliver() -> None:
        peer = await RawPeer.connect(host, int(port))
        try:
            await peer.handshake(NodeIdentity.generate())
            peer.send({"type": "chain_decision", "id": block.id.hex(), "origin": node.node_id, "ts": time.time(),
                       "hops": 0, "body": [block.wire(), commit.wire()]})
            await asyncio.sleep(0.5)
        finally:
            peer.close()
    asyncio.run(deliver())


def test_a_captured_quorum_cannot_forge_an_order_or_move_time(cluster: Cluster):
    validators, (follower,) = pinned_loopback(cluster, 4, 1)
    keys = [NodeIdentity.load_or_create(cluster.base / v.name) for v in validators]
    status, placed = follower.api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": "buy", "price": "100",
                                                             "qty": "1"})
    assert status == 201, placed
    victim = placed["order"]["account"]
    before = follower.get(f"/accounts/{victim}")
    running, paused = validators[0], validators[1:]
    for node in paused:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
    try:
        honest = [running, follower]
        wait_until(lambda: len({n.status()["height"] for n in honest}) == 1, 10, message="the chain is frozen")
        view = running.status()
        chain_id, height, epoch = view["chain_id"], view["height"], view["epoch"]
        assert follower.status()["height"] == height
        exchange = view["exchange"]
        state_hash = running.get("/book/BTC-USD")["state_hash"]
        validator_set = ValidatorSet(epoch, [k.public_key_bytes for k in keys])
        last = _commit(chain_id, height, bytes.fromhex(exchange["last_block_id"]), keys, validator_set)
        forged = sign_tx(lambda data: bytes(64), bytes.fromhex(victim), chain_id, "forged",
                         int(time.time() * 1000) + 60_000, [NewOrderOp.parse("BTC-USD", "sell", "limit", "200", "1",
                                                                             None)])
        block, commit = _certified(chain_id, height + 1, exchange["last_block_time_ms"] + 10,
                                   exchange["last_block_id"], state_hash, keys, epoch, last, [forged])
        for node in honest:
            _send(node, block, commit)
        wait_until(lambda: all(n.status()["height"] == height + 1 for n in honest), 10,
                   message="the honest nodes order the captured quorum's block")
        for node in honest:
            assert node.status()["exchange"]["refused_certified_txs"] == 1
            after = node.get(f"/accounts/{victim}")
            assert (after["positions"], after["open_orders"]) == (before["positions"], before["open_orders"]), \
                "the forged order ran"
            assert node.api("GET", f"/orders/{forged.order_id(0)}")[0] == 404
        ahead_hash = running.get("/book/BTC-USD")["state_hash"]
        future, future_commit = _certified(chain_id, height + 2, exchange["last_block_time_ms"] + 24 * 3600 * 1000,
                                           block.id.hex(), ahead_hash, keys, epoch, commit, [])
        for node in honest:
            _send(node, future, future_commit)
        wait_until(lambda: all(n.status()["exchange"].get("future_certified_blocks", 0) >= 1 for n in honest), 10,
                   message="the block 24 h ahead is seen and held back")
        for node in honest:
            view = node.status()
            assert view["height"] == height + 1, "a block 24 h ahead was applied"
            assert view["exchange"]["last_block_time_ms"] < time.time() * 1000 + 60_000
    finally:
        for node in paused:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
