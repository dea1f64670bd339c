"""Real processes (issue 25, "memory for the asking"): what a peer can make a node hold for it, while an honest
client trades at a follower before, during and after each attack.

As filed, relayed requests from origins nobody links to had each answer held 60 s in the queue for unreachable
peers (bounded by count, not bytes: RSS 62 MB -> 1,196 MB in 40 s); blocks claimed for heights far ahead were
held before any signature check; and handshakes naming other chains grew a map that /status showed in full.

Four validators and a follower share one cluster (module fixture: the attacks are independent). Each test:
- (a) relayed RPC requests to the chain's services (`chain.snapshot`, whose answer is a 256 KiB chunk of a
  snapshot made big by resting orders, and `chain.genesis` with 100 KB of padding) from many fresh origin keys
  nobody links to, through one linked attacker, addressed to the entry validator and relayed to another;
- (b) certified-looking blocks for heights ahead of everyone's, 300 KB each, with garbage signatures, from
  several fresh link keys at once;
- (c) 3,000 handshakes from fresh keys, each naming a chain of its own.
Pass: every node's RSS grows by at most the bound the caps give (see each test), /status stays small, every
honest order is final and its p99 during the attack is within 2x its baseline (floor 0.25 s: p99 of ~30 orders is
their maximum, on two cores shared with the attacker), the chain commits, the attacker is refused and it shows
in /status, and no honest node penalises another.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from exchange.app.txs import NewOrderOp, Op, sign_tx
from exchange.chain.blocks import Block, Commit, Header
from exchange.crypto import SigningKey
from node.identity import NodeIdentity
from tests.flood import HonestClient, p99, rss_mb
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.redteam.attacker import envelope, honest_nodes_intact, linked, relayed

pytestmark = [pytest.mark.timeout(240)]

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "debug_api": "false", "empty_block_interval": 0.5}
NETWORK = "exchange-mainnet"
BASELINE = 3.0              # seconds of honest orders before each attack
AFTER = 2.0                 # and after it
P99_FLOOR = 0.25
STATUS_BYTES = 256 * 1024   # /status of any node, after any attack


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """Four validators (a snapshot every 20 heights) and a follower, one state; a book of 3,000 resting orders
    makes the snapshot bigger than one 256 KiB chunk."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("flood_memory")))
    try:
        validators = cluster.chain(4, seat_rule="any", snapshot_interval=20, **FAST)
        follower = cluster.node("follower", bootstrap_peers=validators[0].p2p_address, **FAST)
        everyone = [*validators, follower]
        wait_until(lambda: converged(everyone), 30)
        _rest_orders(validators, validators[0].status()["chain_id"])
        height = validators[0].status()["height"]
        wait_until(lambda: all(n.status()["storage"]["snapshots"]["newest_height"] > height for n in everyone), 30,
                   interval=0.3, message="a snapshot holding the resting orders on every node")
        yield everyone
    finally:
        cluster.close()


def _rest_orders(validators: list[NodeProcess], chain_id: str, accounts: int = 12, each: int = 250) -> None:
    """`accounts` x `each` resting buy orders, one transaction per account, handed to every validator."""
    expires = int(time.time() * 1000) + 60_000
    txs = []
    for _ in range(accounts):
        key = SigningKey(os.urandom(32))
        ops: list[Op] = [NewOrderOp.parse("BTC-USD", "buy", "limit", f"{1 + n % 50}", "0.01", None) for n in range(each)]
        txs.append(sign_tx(key.sign, key.public_key, chain_id, "rest", expires, ops))

    async def hand_over() -> None:
        trader = NodeIdentity.generate()
        for node in validators:
            peer = await linked(node, trader, chain_id)
            for tx in txs:
                peer.send(envelope("chain_tx", trader.node_id, node.node_id, tx.wire()))
            await peer.writer.drain()
            await asyncio.sleep(0.2)
            peer.close()

    asyncio.run(hand_over())
    wait_until(lambda: all(len(n.get("/book/BTC-USD?depth=100")["bids"]) >= 50 for n in validators), 20,
               message="the resting orders on every validator's book")


class Run:
    """One attack's frame: the honest client and the measures taken before, after and around it."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes
        self.client = HonestClient(nodes[-1])
        self.rss_before: list[float] = []
        self.started = self.ended = 0.0

    def __enter__(self) -> "Run":
        self.client.start()
        time.sleep(BASELINE)
        self.rss_before = [rss_mb(node) for node in self.nodes]
        self.started = time.monotonic()
        return self

    def attack_over(self) -> None:
        self.ended = time.monotonic()
        time.sleep(AFTER)

    def __exit__(self, *exc: object) -> None:
        self.client.stop.set()
        self.client.join(40)

    def growth(self) -> list[float]:
        return [rss_mb(node) - before for node, before in zip(self.nodes, self.rss_before)]

    def check(self, rss_bound_mb: float, label: str) -> None:
        growth = self.growth()
        sizes = [len(json.dumps(node.status())) for node in self.nodes]
        base = self.client.window(0, self.started)
        during = self.client.window(self.started, self.ended + 1.0)
        print(f"\n{label}: RSS growth {[round(g, 1) for g in growth]} MB (bound {rss_bound_mb} MB), /status bytes "
              f"{sizes}, honest orders {len(base)} before, {len(during)} during")
        assert base and during and None not in base + during, f"honest orders not final: {self.client.samples}"
        base_p99, during_p99 = p99(base), p99(during)     # type: ignore[arg-type]
        print(f"{label}: honest p99 {base_p99 * 1000:.0f} ms before, {during_p99 * 1000:.0f} ms during")
        assert during_p99 <= max(2 * base_p99, P99_FLOOR), \
            f"honest p99 {during_p99 * 1000:.0f} ms during the attack vs {base_p99 * 1000:.0f} ms before"
        assert max(growth) <= rss_bound_mb, f"RSS grew by {[round(g) for g in growth]} MB (bound {rss_bound_mb} MB)"
        assert max(sizes) <= STATUS_BYTES, f"/status is {sizes} bytes (bound {STATUS_BYTES})"
        honest_nodes_intact(self.nodes)


# --- (a) relayed requests from origins nobody links to ---------------------------------------------------------
ORIGINS = 64
REQUESTS_PER_ORIGIN = 40
PAD = os.urandom(100_000)


def _rpc(origin: NodeIdentity, dst: str, rid: int, snapshot: bool) -> dict:
    inner = envelope("rpc_request", origin.node_id, dst, None)
    del inner["body"]
    if snapshot:
        inner.update(rid=rid, svc="chain.snapshot", p={"offset": 0}, ttl=5.0)
    else:
        inner.update(rid=rid, svc="chain.genesis", p={"pad": PAD}, ttl=5.0)
    return relayed(origin, inner, NETWORK)


async def _relayed_requests(entry: NodeProcess, other: NodeProcess, chain_id: str) -> tuple[int, int, str]:
    """Every origin's requests, half to `entry`, half relayed by it to `other`, through one linked attacker that
    reads what comes back. Returns (requests sent, bytes that came back, how the link ended)."""
    attacker = NodeIdentity.generate()
    peer = await linked(entry, attacker, chain_id)
    origins = [NodeIdentity.generate() for _ in range(ORIGINS)]
    received = 0

    async def read() -> str:
        nonlocal received
        while True:
            try:
                message = await peer.next_message(30)
            except (ConnectionError, OSError, ValueError):
                return "closed"
            if message is None:
                return "closed"
            if message.get("type") == "goodbye":
                return str(message.get("reason"))
            if message.get("type") == "heartbeat":        # a live peer's answer, or the link is dropped as dead
                peer.send({"type": "heartbeat", "ts": time.time(), "chain": [chain_id, 0]})
            received += len(message.get("body", b"")) if isinstance(message.get("body"), bytes) else 0

    reader = asyncio.create_task(read())
    sent = 0
    for round_ in range(REQUESTS_PER_ORIGIN):
        for n, origin in enumerate(origins):
            if peer.writer.is_closing() or reader.done():
                break
            peer.send(_rpc(origin, entry.node_id if n % 2 else other.node_id, round_ * ORIGINS + n, round_ % 2 == 0))
            sent += 1
        try:
            await asyncio.wait_for(peer.writer.drain(), 10)
        except (ConnectionError, asyncio.TimeoutError):
            break
    await asyncio.sleep(1.0)
    ended = "open" if not reader.done() else reader.result()
    reader.cancel()
    peer.close()
    return sent, received, ended


def test_a_relayed_requests_from_fresh_origins_hold_nothing(nodes):
    entry, other = nodes[0], nodes[1]
    chain_id = entry.status()["chain_id"]
    with Run(nodes) as run:
        sent, received, ended = asyncio.run(_relayed_requests(entry, other, chain_id))
        run.attack_over()
        queues = [node.status()["router"]["queue"] for node in nodes]
        print(f"\n(a) sent {sent} requests, {received} bytes came back, link {ended}; hold queues {queues}")
        run.check(rss_bound_mb=64, label="(a) relayed requests")


# --- (b) blocks claimed for heights far ahead -----------------------------------------------------------------
AHEAD_SENDERS = 8
AHEAD_BLOCKS = 20           # per sender
AHEAD_BYTES = 300_000


def _claimed_block(chain_id: str, height: int) -> dict:
    items = [["a", os.urandom(AHEAD_BYTES)]]
    header = Header(chain_id, height, int(time.time() * 1000), os.urandom(32), bytes(32), bytes(32), bytes(32),
                    Block.txs_hash(items), None)
    block = Block(header, items)
    commit = Commit(height, 0, block.id, ((0, os.urandom(64)), (1, os.urandom(64)), (2, os.urandom(64))))
    return {"type": "chain_decision", "id": block.id.hex(), "ts": time.time(), "hops": 0,
            "body": [block.wire(), commit.wire()]}


async def _blocks_ahead(targets: list[NodeProcess], chain_id: str, height: int) -> int:
    sent = 0

    async def one(sender: int) -> None:
        nonlocal sent
        identity = NodeIdentity.generate()
        peers = [await linked(node, identity, chain_id) for node in targets]
        for k in range(AHEAD_BLOCKS):
            message = _claimed_block(chain_id, height + 2 + sender * AHEAD_BLOCKS + k)
            message["origin"] = identity.node_id
            for peer in peers:
                if not peer.writer.is_closing():
                    peer.send(message)
                    sent += 1
            for peer in peers:
                try:
                    await asyncio.wait_for(peer.writer.drain(), 10)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
        await asyncio.sleep(0.5)
        for peer in peers:
            peer.close()

    await asyncio.gather(*(one(s) for s in range(AHEAD_SENDERS)))
    return sent


def test_b_blocks_claimed_far_ahead_are_not_held(nodes):
    chain_id = nodes[0].status()["chain_id"]
    with Run(nodes) as run:
        sent = asyncio.run(_blocks_ahead([nodes[0], nodes[-1]], chain_id, max(n.status()["height"] for n in nodes) + 50))
        run.attack_over()
        counters = [{k: v for k, v in node.status()["exchange"].items() if "buffer" in k or "ahead" in k}
                    for node in nodes]
        print(f"\n(b) sent {sent} blocks of {AHEAD_BYTES} bytes; {counters}")
        run.check(rss_bound_mb=64, label="(b) blocks ahead")


# --- (c) handshakes naming other chains -----------------------------------------------------------------------
HANDSHAKES = 3000


async def _other_chains(targets: list[NodeProcess], count: int, concurrency: int = 32) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            node = targets[n % len(targets)]
            try:
                peer = await linked(node, NodeIdentity.generate(), os.urandom(32).hex())
                outcome = "open"
                peer.close()
            except Exception as exc:  # noqa: BLE001 - any refusal is an outcome here
                outcome = type(exc).__name__ + ":" + str(getattr(exc, "reason", ""))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    await asyncio.gather(*(one(n) for n in range(count)))
    return outcomes


def test_c_handshakes_naming_other_chains_leave_status_small(nodes):
    with Run(nodes) as run:
        outcomes = asyncio.run(_other_chains([nodes[0], nodes[-1]], HANDSHAKES))
        run.attack_over()
        conflicts = [len(node.status()["conflicting_networks"]) for node in nodes]
        print(f"\n(c) {HANDSHAKES} handshakes: {outcomes}; conflicts shown {conflicts}")
        run.check(rss_bound_mb=64, label="(c) other chains")
