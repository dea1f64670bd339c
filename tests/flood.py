"""Floods on real processes, shared by the attack tests and `python -m bench flood` (issue 25): an honest client
that times its orders, and attackers speaking the real protocol with fresh keys (orders from fresh accounts,
RPC hints and diagnostic notes each signed by a fresh key, re-requests of cached broadcasts)."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from exchange.crypto import SigningKey
from exchange.app.txs import NewOrderOp, Op, SignedTx, sign_tx
from node.identity import NodeIdentity
from p2p.framing import encode_body
from p2p.origin_auth import OriginAuth
from p2p.rpc.gossip import hint_proof
from tests.harness import NodeProcess
from tests.redteam.attacker import envelope, linked
from tests.wire import RawPeer


class HonestClient:
    """One order every `interval` at a node, each timed until its final answer (201), from a process of its own
    (tests/honest_orders.py): a trader is not the attacker, and timed inside the process that signs, encrypts
    and sends the flood it would also be timing the attacker's hold on that process's interpreter lock."""

    def __init__(self, node: NodeProcess, interval: float = 0.2) -> None:
        self.node, self.interval = node, interval
        self.samples: list[tuple[float, float | None]] = []     # (sent at, seconds to final | None: not final)
        self.stop = _StopSignal(self)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        auth = self.node.auth_headers().get("Authorization", "")
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.honest_orders", self.node.api_url, str(self.interval),
                                       auth], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      cwd=Path(__file__).resolve().parent.parent)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sent, latency = line.split()
            self.samples.append((float(sent), None if latency == "null" else float(latency)))

    def join(self, timeout: float | None = None) -> None:
        """Wait for the order in flight when `stop` was set, and its sample."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def window(self, start: float, end: float) -> list[float | None]:
        return [latency for sent, latency in self.samples if start <= sent < end]


class _StopSignal:
    """`client.stop.set()`: the client finishes the order in flight and exits (its stdin closes)."""

    def __init__(self, client: HonestClient) -> None:
        self._client = client
        self._set = False

    def set(self) -> None:
        self._set = True
        proc = self._client._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()

    def is_set(self) -> bool:
        return self._set


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p99(values: list[float]) -> float:
    return quantile(values, 0.99)


def spam_orders(chain_id: str, count: int, ttl_ms: int = 110_000) -> list[SignedTx]:
    """`count` signed one-order transactions, each from a fresh account."""
    expires = int(time.time() * 1000) + ttl_ms
    op: list[Op] = [NewOrderOp.parse("BTC-USD", "buy", "limit", "1", "0.01", None)]
    return [sign_tx((key := SigningKey(os.urandom(32))).sign, key.public_key, chain_id, "spam", expires, op)
            for _ in range(count)]


def fresh_note(network: str, payload: str) -> dict:
    """A diagnostic note signed by a fresh key, as a relay would pass it on."""
    author = NodeIdentity.generate()
    auth = OriginAuth(node_id=author.node_id, public_key=author.public_key_bytes, sign=author.sign,
                      verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for, network=network)
    note = {"type": "note", "origin": author.node_id, "ts": time.time(), "hops": 1, "payload": payload}
    auth.sign_broadcast(note)
    return note


def fresh_hint(network: str, subject: str) -> dict:
    """An RPC health hint about `subject`, signed by a fresh key (valid: any key may author one)."""
    author = NodeIdentity.generate()
    hint = {"type": "hint", "id": os.urandom(12).hex(), "origin": author.node_id, "ts": time.time(),
            "subject": subject, "status": "degraded", "service": "exchange.submit", "latency_ms": 900.0,
            "error_rate": 0.5, "pk": author.public_key_bytes, "hops": 1}
    hint["sig"] = author.sign(hint_proof(hint, network))
    return hint


async def send_paced(peers: list[RawPeer], messages: list[list[dict]], rate: float) -> float:
    """Send `messages[i]` over `peers[i]` at `rate` messages a second per peer (as fast as the links take them
    when the machine cannot keep up); returns the seconds it took."""
    started = time.monotonic()
    longest = max((len(batch) for batch in messages), default=0)
    for index in range(longest):
        for peer, batch in zip(peers, messages):
            if index < len(batch) and not peer.writer.is_closing():
                peer.send(batch[index])
        if index % 50 == 49:
            for peer in peers:
                try:
                    await asyncio.wait_for(peer.writer.drain(), 5)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            ahead = (index + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    return time.monotonic() - started


async def order_flood(validators: list[NodeProcess], chain_id: str, spam: list[SignedTx], rate: float) -> float:
    """Every spam transaction to every validator at `rate` a second, from one fresh peer identity."""
    flooder = NodeIdentity.generate()
    peers = [await linked(node, flooder, chain_id) for node in validators]
    try:
        batches = [[envelope("chain_tx", flooder.node_id, node.node_id, tx.wire()) for tx in spam] for node in validators]
        return await send_paced(peers, batches, rate)
    finally:
        for peer in peers:
            peer.close()


async def hint_flood(entries: list[NodeProcess], network: str, chain_id: str, subject: str, count: int,
                     rate: float) -> float:
    """`count` fresh-key hints to each entry node at `rate` a second."""
    attacker = NodeIdentity.generate()
    peers = [await linked(node, attacker, chain_id) for node in entries]
    try:
        batches = [[fresh_hint(network, subject) for _ in range(count)] for _ in entries]
        return await send_paced(peers, batches, rate)
    finally:
        for peer in peers:
            peer.close()


async def graft_flood(node: NodeProcess, chain_id: str, seconds: float, rate: float) -> tuple[int, int, int]:
    """Link to `node`, collect the ids of the broadcasts it pushes for `seconds`, then ask for the newest 64 of
    them again `rate` times a second for `seconds`. Returns (bytes of graft requests sent, bytes of copies of
    already-received broadcasts that came back: the answers, ids collected)."""
    attacker = NodeIdentity.generate()
    peer = await linked(node, attacker, chain_id)
    ids: dict[str, str] = {}
    asked = answered = 0

    async def read() -> None:
        nonlocal answered
        while True:
            message = await peer.next_message(60)
            if message is None:
                return
            if "id" in message and "dst" not in message and "origin" in message:
                if message["id"] in ids:
                    answered += len(encode_body(message))
                else:
                    ids[message["id"]] = message["origin"]

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not peer.writer.is_closing():
            chosen = list(ids.items())[-64:]
            if chosen:
                request = {"type": "graft", "ids": [mid for mid, _ in chosen], "origins": [o for _, o in chosen]}
                peer.send(request)
                asked += len(encode_body(request))
            await asyncio.sleep(1.0 / rate)
        await asyncio.sleep(0.5)
        return asked, answered, len(ids)
    finally:
        reader.cancel()
        peer.close()


def rss_mb(node: NodeProcess) -> float:
    """The node process's resident memory now (Linux /proc)."""
    assert node.proc is not None
    for line in open(f"/proc/{node.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
