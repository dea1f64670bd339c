"""Real processes against an authenticated, hostile peer (tests/wire.py runs the real Noise
handshake, then sends what it likes): malformed and forged broadcasts, zero signatures, spoofed
origins and a badly signed relayed unicast cost no honest node a link or a penalty, while the
attacker is banned; 300 concurrent handshakes never push a node past MAX_PEERS."""
from __future__ import annotations

import asyncio
import os
import threading
import time

from node.identity import NodeIdentity
from p2p.framing import encode_body, encode_frame
from tests.harness import wait_until
from tests.wire import HandshakeRefused, RawPeer, handshake_from_each

LINE = {"target_outbound": 1, "discovery_pex": "false", "debug_api": "true"}


def envelope(kind: str, origin: str, **fields) -> dict:
    return {"type": kind, "id": os.urandom(12).hex(), "origin": origin, "ts": time.time(), "hops": 0, **fields}


def row(node, node_id: str) -> dict:
    return next((p for p in node.peers() if p["node_id"] == node_id), {})


def no_tracebacks(*nodes) -> None:
    for node in nodes:
        text = node.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Fatal error" not in text, node.log_tail(60)
        assert node.status()["p2p"]["internal_errors"] == {}


async def attack_once(port: int, identity: NodeIdentity, batch: list[dict]) -> str:
    """One authenticated connection sending `batch`; the reason the node closed it with."""
    peer = await RawPeer.connect("127.0.0.1", port)
    try:
        await peer.handshake(identity)
    except HandshakeRefused as exc:
        peer.close()
        return f"refused:{exc.reason}"
    # one write for the whole batch: the node closes at the first bad message, and a later write of ours
    # into the closed socket would fail the read of its goodbye with a broken pipe
    peer.send_plain(b"".join(encode_frame(message) for message in batch))
    try:
        reason, _ = await peer.until_goodbye(2.0)
    except TimeoutError:
        reason = "still_open"
    peer.close()
    return reason or "closed"


async def attack(port: int, mallory: NodeIdentity, victim_ids: dict[str, str]) -> list[str]:
    """Every attack from its own attacker identity on its own connection (each costs the attacker its
    link); returns the close reasons the node gave."""
    a_id, b_id, c_id = victim_ids["a"], victim_ids["b"], victim_ids["c"]
    zero = {"pk": mallory.public_key_bytes, "sig": b"\x00" * 64}
    forged_body = encode_body(envelope("note", b_id, dst=c_id, payload="from b, honest"))
    attacks = [
        # malformed broadcasts (each a protocol violation by the sender)
        [envelope("note", mallory.node_id, hops="many")] * 3,
        [{"type": "note", "id": "x" * 12, "origin": {"map": "as origin"}, "hops": 0}],
        [{"type": "ihave", "ids": ["a", "b"], "origins": [b_id]}],
        # a broadcast with a zero signature, one claiming to come from b, one with a stolen id
        [envelope("note", mallory.node_id, payload="zero sig", **zero)],
        [envelope("note", b_id, payload="i am b", **zero)],
        # a relayed unicast claiming b as its origin, signed with a zero signature
        [{"type": "relay", "id": "r" * 24, "origin": b_id, "dst": c_id, "hops": 0, "ts": time.time(),
          "body": forged_body, **zero}],
        # an RPC request naming b as its requester, sent straight over the link
        [envelope("rpc_request", b_id, dst=a_id, rid=1, svc="ping")],
    ]
    reasons = []
    for batch in attacks:
        attacker = NodeIdentity.generate()
        batch = [dict(m, origin=attacker.node_id) if m.get("origin") == mallory.node_id else m for m in batch]
        batch = [dict(m, pk=attacker.public_key_bytes) if "pk" in m and m.get("origin") == attacker.node_id else m
                 for m in batch]
        reasons.append(await attack_once(port, attacker, batch))
    # one attacker that keeps forging is banned, and stays out
    for _ in range(4):
        reasons.append(await attack_once(port, mallory, [envelope("note", mallory.node_id, payload="zero", **zero)]))
    return reasons


def test_forgeries_cost_honest_nodes_nothing_and_get_the_attacker_banned(cluster):
    a = cluster.node("a", **LINE)
    b = cluster.node("b", bootstrap_peers=a.p2p_address, **LINE)
    c = cluster.node("c", bootstrap_peers=b.p2p_address, **LINE)
    wait_until(lambda: a.connected_ids() == {b.node_id}, 10)
    wait_until(lambda: c.connected_ids() == {b.node_id} and b.connected_ids() == {a.node_id, c.node_id}, 10)
    mallory = NodeIdentity.generate()
    reasons = asyncio.run(attack(a.p2p_port, mallory, {"a": a.node_id, "b": b.node_id, "c": c.node_id}))
    print("close reasons given to the attacker:", reasons)
    assert reasons[:3] == ["malformed_message", "malformed_message", "malformed_message"]
    assert reasons[3:6] == ["bad_signature", "bad_signature", "bad_signature"]
    assert reasons[6] == "spoofed_origin"
    assert reasons[7:9] == ["bad_signature", "bad_signature"]  # 50 points each, decaying: the third bans
    assert reasons[9] in ("banned", "bad_signature") and reasons[10] == "refused:banned"
    assert row(a, mallory.node_id)["status"] == "banned"

    # a real broadcast still crosses the whole line, and nothing the attacker sent went past `a`
    status, body = a.api("POST", "/debug/broadcast", {"type": "note", "payload": "after the attack"})
    assert status == 200
    (mid,) = body["ids"]
    wait_until(lambda: any(r[0] == mid for r in c.get("/debug/received?type=note")["received"]), 5)
    for node in (b, c):
        origins = {r[1] for r in node.get("/debug/received?type=note")["received"]}
        assert mallory.node_id not in origins and node.status()["router"]["received"].get("relay", 0) == 0
    # every honest link kept, no honest node penalised by anyone
    assert a.connected_ids() == {b.node_id} and b.connected_ids() == {a.node_id, c.node_id}
    for node, neighbours in ((a, [b]), (b, [a, c]), (c, [b])):
        for other in neighbours:
            assert row(node, other.node_id)["penalty"] == 0, (node.name, other.name)
    violations = a.status()["p2p"]["violations"]
    assert violations.get("bad_signature", 0) >= 1 and violations.get("spoofed_origin", 0) == 1
    no_tracebacks(a, b, c)


async def _open_and_hold(port: int, opened: list, stop: asyncio.Event) -> None:
    peer = await RawPeer.connect("127.0.0.1", port)
    try:
        await peer.handshake(NodeIdentity.generate(), wait_open=True)
        opened.append(peer)
        await stop.wait()
    except (HandshakeRefused, ConnectionError, OSError, TimeoutError):
        pass
    finally:
        peer.close()


def test_300_concurrent_handshakes_never_exceed_max_peers_and_keep_honest_peers(cluster):
    victim = cluster.node("victim", max_peers=50, target_outbound=8, discovery_pex="false", handshake_timeout=10)
    honest = [cluster.node(f"h{i}", bootstrap_peers=victim.p2p_address, discovery_pex="false") for i in range(3)]
    wait_until(lambda: {h.node_id for h in honest} <= victim.connected_ids(), 10)
    time.sleep(1.5)  # heartbeats measure the honest links' RTT
    samples: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                samples.append(victim.status()["peers_connected"])
            except OSError:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()

    async def storm() -> int:
        opened: list = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_open_and_hold(victim.p2p_port, opened, stop)) for _ in range(300)]
        await asyncio.sleep(3.0)
        count = len(opened)
        stop.set()
        await asyncio.gather(*tasks)
        return count

    try:
        opened = asyncio.run(storm())
    finally:
        done.set()
        watcher.join()
    p2p = victim.status()["p2p"]
    print(f"attacker links opened {opened}, most links seen {max(samples)}, refused {p2p['counters']['refused_inbound']},"
          f" evictions {p2p['counters']['evictions']}")
    assert max(samples) <= 50
    evictions = p2p["counters"]["evictions"]  # an evicted attacker link made room for another
    assert opened - evictions <= 47
    # each attempt was refused, or opened, or evicted (a handshake in progress makes room for a newer one)
    assert p2p["counters"]["refused_inbound"] + opened + evictions >= 250
    assert {h.node_id for h in honest} <= victim.connected_ids()
    for h in honest:
        assert victim.node_id in h.connected_ids()
    no_tracebacks(victim)


async def _connect_from(ip: str, port: int, identity: NodeIdentity) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0))
    peer = RawPeer(reader, writer)
    try:
        await peer.handshake(identity)
        return "open"
    except (HandshakeRefused, ConnectionError, TimeoutError):
        return "refused"
    finally:
        peer.close()


def test_per_ip_and_per_subnet_caps_when_applied_to_loopback(cluster):
    node = cluster.node("capped", inbound_limit_loopback="true", max_inbound_per_ip=2, max_inbound_per_subnet=3,
                        discovery_pex="false")

    sources = ["127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
    results = asyncio.run(handshake_from_each("127.0.0.1", node.p2p_port, sources))
    assert results == ["open", "open", "refused", "open", "refused"], results
    reasons = node.status()["p2p"]["close_reasons"]
    assert reasons.get("too_many_from_ip") == 1 and reasons.get("too_many_from_subnet") == 1
    assert "too_many_from_ip" in node.log_path.read_text()


def test_relayed_rpc_carries_its_origins_signature_and_a_forged_one_stops_at_the_relay(cluster):
    a = cluster.node("a", **LINE)
    b = cluster.node("b", bootstrap_peers=a.p2p_address, **LINE)
    c = cluster.node("c", bootstrap_peers=b.p2p_address, **LINE)
    wait_until(lambda: c.connected_ids() == {b.node_id} and b.connected_ids() == {a.node_id, c.node_id}, 10)

    def relayed_ping() -> bool:
        done = a.cli("rpc", "ping", "--peer", c.node_id)
        return done.returncode == 0 and c.node_id in done.stdout

    wait_until(relayed_ping, 10, interval=0.3, message="a reaches c's ping through b")
    assert b.status()["router"]["events"]["relayed"] >= 2  # the request and its answer
    served = c.get("/routing")["server"]["requests"]

    mallory = NodeIdentity.generate()
    inner = envelope("rpc_request", a.node_id, dst=c.node_id, rid=7, svc="ping")
    forged = {"type": "relay", "id": inner["id"], "origin": a.node_id, "dst": c.node_id, "hops": 0,
              "ts": time.time(), "body": encode_body(inner), "pk": mallory.public_key_bytes, "sig": b"\x01" * 64}
    reason = asyncio.run(attack_once(b.p2p_port, mallory, [forged]))
    assert reason == "bad_signature"
    time.sleep(0.3)
    assert c.get("/routing")["server"]["requests"] == served  # never reached the target
    assert b.connected_ids() == {a.node_id, c.node_id}
    no_tracebacks(a, b, c)


def test_connections_faster_than_the_handshake_rate_are_refused_before_any_handshake_work(cluster):
    node = cluster.node("paced", inbound_limit_loopback="true", inbound_handshake_rate=2, discovery_pex="false")

    async def dial_in_turn(times: int) -> list[str]:
        results = []
        for _ in range(times):          # each closed before the next: the caps on open connections never bind
            reader, writer = await asyncio.open_connection("127.0.0.1", node.p2p_port, local_addr=("127.0.0.5", 0))
            peer = RawPeer(reader, writer)
            try:
                await peer.handshake(NodeIdentity.generate())
                results.append("open")
            except (HandshakeRefused, ConnectionError, TimeoutError):
                results.append("refused")
            finally:
                peer.close()
        return results

    results = asyncio.run(dial_in_turn(12))
    assert results[:4] == ["open"] * 4 and results.count("refused") >= 6, results     # a burst of 2 s' worth, then 2/s
    assert node.status()["p2p"]["close_reasons"].get("too_many_handshakes", 0) >= 6
