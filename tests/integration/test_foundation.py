"""Foundation acceptance: real exchange-node processes on loopback, observed through the control API."""
from __future__ import annotations

import asyncio
import glob
import struct
import time


from node.identity import NodeIdentity
from p2p.framing import encode_frame
from tests.harness import wait_until
from tests.wire import RawPeer


def test_bootstrap_kill_and_restart_from_remembered_peers(cluster):
    a = cluster.node("a")
    b = cluster.node("b", bootstrap_peers=a.p2p_address)
    c = cluster.node("c", bootstrap_peers=a.p2p_address)
    started = time.monotonic()
    wait_until(lambda: {b.node_id, c.node_id} <= a.connected_ids(), 5, message="A linked to B and C")
    assert time.monotonic() - started < 5
    wait_until(lambda: a.node_id in c.connected_ids(), 5)
    wait_until(lambda: a.node_id in (c.data_dir / ".peers.json").read_text(), 2, message="C remembers A")

    c_id = c.node_id
    c.kill()  # kill -9: no goodbye, no final save
    killed = time.monotonic()
    wait_until(lambda: c_id not in a.connected_ids(), 3, message="A marks C disconnected")
    wait_until(lambda: c_id not in b.connected_ids(), 3, message="B marks C disconnected")
    assert time.monotonic() - killed < 3
    row = next(p for p in a.peers() if p["node_id"] == c_id)
    assert row["status"] == "disconnected"

    # Restart C from its data dir with no bootstrap: .peers.json alone brings it back.
    c.start(wait=False, bootstrap_peers="")
    restarted = time.monotonic()
    c.wait_ready()
    assert c.node_id == c_id  # same key, same identity
    wait_until(lambda: a.node_id in c.connected_ids(), 5, message="C reconnects from .peers.json")
    assert time.monotonic() - restarted < 5
    sources = {p["node_id"]: p["source"] for p in c.peers()}
    assert sources[a.node_id] == "persisted"
    wait_until(lambda: c_id in a.connected_ids(), 3)


def test_clean_shutdown_says_goodbye_and_saves_peers(cluster):
    a = cluster.node("a")
    b = cluster.node("b", bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 5)
    assert b.stop() == 0
    rows = wait_until(lambda: [p for p in a.peers() if p["node_id"] == b.node_id and p["status"] == "disconnected"], 3)
    assert rows[0]["close_reason"] == "remote_shutdown"
    saved = (b.data_dir / ".peers.json").read_text()
    assert a.node_id in saved


async def _expect_goodbye(port: int, payload: bytes | None, reason: str, timeout: float = 5.0, *,
                          secure: bool = True, hello: dict | None = None) -> float:
    """Connect, (run the Noise handshake,) send `payload` through the channel and/or a hello, and
    expect the node to close with `reason` (said in a goodbye when the channel allows one)."""
    peer = await RawPeer.connect("127.0.0.1", port)
    identity = NodeIdentity.generate()
    started = time.monotonic()
    if secure:
        await peer.secure(identity)
    if payload is not None:
        peer.send_plain(payload) if secure else peer.send_raw(payload)
    if hello is not None:
        peer.send(peer.hello(identity) | hello)
    got, closed = await peer.until_goodbye(timeout)
    peer.close()
    assert got == reason
    assert closed
    return time.monotonic() - started


async def _expect_close(port: int, payload: bytes, timeout: float = 5.0) -> None:
    """Before the Noise handshake there is no channel for a goodbye: the node just closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    async with asyncio.timeout(timeout):
        assert await reader.read() == b""
    writer.close()


def test_bad_input_is_refused_and_node_keeps_serving(cluster):
    a = cluster.node("a", handshake_timeout=1.0)
    b = cluster.node("b", bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 5)
    port = a.p2p_port

    async def attacks() -> None:
        await _expect_close(port, b"\x00\x05hello")                       # not a Noise message 1
        await _expect_close(port, b"\x00\x20" + b"\x00" * 32 + b"\x00\x10" + b"\x01" * 16)  # low-order key
        v1_hello = encode_frame({"type": "handshake", "node_id": "f" * 40, "protocol": 1})
        await _expect_goodbye(port, v1_hello, "incompatible_version", secure=False)  # told in protocol 1 framing
        await _expect_goodbye(port, b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", "malformed_frame")
        await _expect_goodbye(port, struct.pack(">I", 0x7FFFFFFF) + b"xx", "frame_too_large")
        await _expect_goodbye(port, encode_frame({"type": "order", "id": 1}), "handshake_required")
        await _expect_goodbye(port, None, "network_mismatch", hello={"network": "some-other-net"})
        await _expect_goodbye(port, None, "incompatible_version", hello={"protocol": 1})
        await _expect_goodbye(port, None, "incompatible_version", hello={"protocol": 65536})
        await _expect_goodbye(port, None, "identity_mismatch", hello={"node_id": "e" * 40})
        await _expect_goodbye(port, None, "malformed_message", hello={"node_id": "short"})
        # bytes injected into the channel that the peer's key did not seal
        peer = await RawPeer.connect("127.0.0.1", port)
        await peer.secure(NodeIdentity.generate())
        peer.send_raw(b"\x00\x20" + b"\x42" * 32)
        assert (await peer.until_goodbye())[0] == "decrypt_failed"
        peer.close()
        silent = await _expect_goodbye(port, None, "handshake_timeout", timeout=3.0)
        assert 0.5 < silent < 2.5

    asyncio.run(attacks())
    status = a.status()
    assert status["peers_connected"] == 1
    assert b.node_id in a.connected_ids()
    reasons = status["p2p"]["close_reasons"]
    for reason in ("malformed_frame", "frame_too_large", "network_mismatch", "handshake_timeout", "decrypt_failed",
                   "handshake_required", "incompatible_version", "malformed_message", "noise_handshake_failed",
                   "identity_mismatch"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    assert status["p2p"]["internal_errors"] == {}
    assert "Traceback" not in a.log_path.read_text()


def test_claiming_another_nodes_id_is_refused(cluster, tmp_path):
    a = cluster.node("a")
    b = cluster.node("b", bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 5)
    b_key = NodeIdentity.load_or_create(b.data_dir)  # only to read B's public key bytes
    mallory = NodeIdentity.generate()

    async def impersonate() -> None:
        # 1) Mallory's own key, but a hello naming B: the Noise handshake proved Mallory.
        peer = await RawPeer.connect("127.0.0.1", a.p2p_port)
        await peer.secure(mallory)
        peer.send(peer.hello(mallory, claim_id=b.node_id))
        reason, _ = await peer.until_goodbye()
        assert reason == "identity_mismatch"
        peer.close()
        # 2) B's public key in the Noise payload, signed by Mallory: the static key is not B's.
        from p2p.secure.channel import SecureHandshake, StaticIdentity
        static = StaticIdentity(mallory.sign, b_key.public_key_bytes)
        handshake = SecureHandshake(True, static, NodeIdentity.verify, NodeIdentity.node_id_for)
        reader, writer = await asyncio.open_connection("127.0.0.1", a.p2p_port)
        writer.write(handshake.start())
        writer.write(handshake.feed(await reader.read(65536)))
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # refused: bad_identity, no channel for a goodbye
        writer.close()

    asyncio.run(impersonate())
    assert b.node_id in a.connected_ids()  # the real B keeps its link
    wait_until(lambda: a.status()["p2p"]["close_reasons"].get("identity_mismatch"), 2)
    wait_until(lambda: a.status()["p2p"]["close_reasons"].get("bad_identity"), 2)


def test_corrupted_peers_file_is_moved_aside(cluster):
    a = cluster.node("a", start=False)
    (a.data_dir / ".peers.json").write_bytes(b"{not json at all")
    a.start()
    assert a.status()["node_id"]
    assert glob.glob(str(a.data_dir / ".peers.json.corrupt-*"))
    wait_until(lambda: "corrupt" in a.log_tail(200).lower() or "moved" in a.log_tail(200).lower(), 2)


def test_invalid_settings_exit_2_with_named_setting(cluster):
    a = cluster.node("a", start=False)
    import subprocess
    import sys
    from tests.harness import ROOT
    for args, env, needle in [
        (["--port", "70000"], {}, "invalid --port='70000'"),
        (["--max-peers", "abc"], {}, "invalid --max-peers='abc'"),
        ([], {"MAX_PEERS": "abc"}, "MAX_PEERS"),
        ([], {"BOOTSTRAP_PEERS": "host-without-port"}, "BOOTSTRAP_PEERS"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "node.cli", "start", "--data-dir", str(a.data_dir), *args],
                              cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": str(a.data_dir), **env},
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr


def test_cli_status_and_peers_tables_and_json(cluster):
    a = cluster.node("a")
    b = cluster.node("b", bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 5)
    out = a.cli("status")
    assert out.returncode == 0 and a.node_id in out.stdout and "peers" in out.stdout
    out = b.cli("peers")
    assert out.returncode == 0 and a.node_id[:16] in out.stdout and "bootstrap" in out.stdout
    import json
    data = json.loads(b.cli("peers", "--json").stdout)
    row = next(p for p in data["peers"] if p["node_id"] == a.node_id)
    assert {"node_id", "host", "port", "status", "direction", "source", "rtt_ms", "last_seen"} <= set(row)


def test_cli_without_a_node_exits_1():
    import subprocess
    import sys
    from tests.harness import ROOT
    proc = subprocess.run([sys.executable, "-m", "node.cli", "status", "--api", "http://127.0.0.1:9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    assert "connection refused at 127.0.0.1:9 (address from --api)" in proc.stderr
