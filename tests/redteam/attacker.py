"""The red team's hostile peer: the project's own Noise handshake and framing (tests/wire.py), then whatever
the test sends, plus the checks every attack ends with (honest links and penalties, no traceback)."""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from node.identity import NodeIdentity
from p2p.framing import encode_body
from p2p.origin_auth import RELAY_DOMAIN
from tests.harness import NodeProcess, converged, wait_until
from tests.wire import HandshakeRefused, RawPeer


def envelope(kind: str, origin: str, dst: str, body: Any) -> dict:
    return {"type": kind, "id": os.urandom(12).hex(), "origin": origin, "dst": dst, "ts": time.time(), "hops": 0,
            "body": body}


def relayed(identity: NodeIdentity, inner: dict, network: str = "exchange-mainnet") -> dict:
    """`inner` in a relay wrapper signed by `identity` (its origin), as any node's router builds one."""
    body = encode_body(inner)
    return {"type": "relay", "id": inner["id"], "origin": identity.node_id, "dst": inner["dst"], "hops": 0,
            "ts": inner["ts"], "body": body, "pk": identity.public_key_bytes,
            "sig": identity.sign(RELAY_DOMAIN + network.encode() + b"|" + body)}


async def linked(node: NodeProcess, identity: NodeIdentity, chain_id: str, source: str | None = None) -> RawPeer:
    """An open, authenticated link to `node` from `identity`, announcing `chain_id` at height 0 (from the loopback
    address `source`, if given: another host on another network)."""
    host, port = node.p2p_address.rsplit(":", 1)
    peer = await RawPeer.connect(host, int(port), local_host=source)
    await peer.handshake(identity, chain=[chain_id, 0])
    return peer


async def read_until(peer: RawPeer, kind: str, timeout: float = 10.0) -> dict:
    """The next message of type `kind` (heartbeats and the rest are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await peer.next_message(timeout)
            if message is None:
                raise ConnectionError(f"closed while waiting for {kind}")
            if message.get("type") == kind:
                return message


async def closed_with(peer: RawPeer, timeout: float = 5.0) -> str:
    """The goodbye reason the node closed our link with ("still_open" if it did not)."""
    try:
        reason, _ = await peer.until_goodbye(timeout)
    except (TimeoutError, asyncio.TimeoutError):
        return "still_open"
    except (ConnectionError, OSError, ValueError):
        return "closed"
    finally:
        peer.close()
    return reason or "closed"


def try_handshake(node: NodeProcess) -> str:
    """A fresh identity's full handshake: "open", or the reason it was refused."""
    async def attempt() -> str:
        host, port = node.p2p_address.rsplit(":", 1)
        peer = await RawPeer.connect(host, int(port))
        try:
            await peer.handshake(NodeIdentity.generate())
            return "open"
        except HandshakeRefused as exc:
            return f"refused:{exc.reason}"
        finally:
            peer.close()
    return asyncio.run(attempt())


def penalties_logged(node: NodeProcess, node_id: str) -> list[str]:
    """Reasons the chain layer gave for penalising `node_id` (its WARNING lines)."""
    marker = f"penalising peer {node_id[:12]}: "
    return [line.split(marker, 1)[1].strip() for line in node.log_path.read_text(errors="replace").splitlines()
            if marker in line]


def closed_reason(node: NodeProcess, node_id: str, timeout: float = 2.0) -> str:
    """Why `node` closed its link to `node_id`, as its /peers shows it (the reason, and the penalty's if any): a
    link it aborted (a peer that does not read fast enough) gets no goodbye to read it from."""
    def closed() -> dict[str, Any] | None:
        record = next((peer for peer in node.get("/peers")["peers"] if peer["node_id"] == node_id), None)
        return record if record is not None and record["close_reason"] else None
    try:
        record = wait_until(closed, timeout, 0.1, "the node's record of the closed link")
    except AssertionError:
        return "still open, or forgotten, at the node"
    penalty = f" (penalised: {record['penalty_reason']})" if record.get("penalty_reason") else ""
    return f"{record['close_reason']}{penalty}"


def honest_nodes_intact(nodes: list[NodeProcess], blocks: int = 3) -> None:
    """What every attack must leave behind: each honest node linked to every other, nobody honest penalised
    or banned, the chain `blocks` heights further on every node, one state everywhere, no traceback."""
    ids = {n.node_id for n in nodes}
    start = max(n.status()["height"] for n in nodes)
    wait_until(lambda: min(n.status()["height"] for n in nodes) >= start + blocks, 20,
               message=f"every node {blocks} blocks past {start} after the attack")
    for node in nodes:
        rows = {p["node_id"]: p for p in node.peers()}
        for other in ids - {node.node_id}:
            assert rows[other]["status"] == "connected", (node.name, other, rows[other])
            assert rows[other]["penalty"] == 0, (node.name, "penalised an honest node", rows[other])
        for other in ids - {node.node_id}:
            assert penalties_logged(node, other) == [], (node.name, penalties_logged(node, other))
        status = node.status()
        assert status["exchange"].get("halted") in (None, False, ""), status["exchange"]
        assert status["p2p"]["internal_errors"] == {}, status["p2p"]["internal_errors"]
        text = node.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Fatal error" not in text, node.log_tail(60)
    wait_until(lambda: converged(nodes), 20, interval=0.2, message="one state on every node")
