"""Promise 2 (a hostile peer hurts only itself), attacked on three real validators: malformed and oversized
frames inside a valid Noise channel, a tampered ciphertext, and slowloris handshakes (silent and drip-fed)
against the handshake timeout. Each attack costs the attacker its link; the honest validators keep each
other, penalise nobody honest, keep finalising on one state, and log no traceback."""
from __future__ import annotations

import asyncio
import struct
import time

import msgpack
import pytest

from node.identity import NodeIdentity
from p2p.framing import encode_frame
from tests.harness import wait_until
from tests.redteam.attacker import closed_with, honest_nodes_intact, linked, penalties_logged, try_handshake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HANDSHAKE_TIMEOUT = 5.0     # the node's default (HANDSHAKE_TIMEOUT)


def frame(raw_body: bytes) -> bytes:
    return struct.pack(">I", len(raw_body)) + raw_body


def test_malformed_and_oversized_frames_cost_only_the_attacker_its_link(chain3):
    nodes = chain3
    target = nodes[0]
    chain_id = target.status()["chain_id"]
    attacks = {
        "oversized": struct.pack(">I", 2 * 1024 * 1024) + b"\x00" * 4096,       # past MAX_FRAME_BYTES
        "never_used_msgpack_byte": frame(b"\xc1" * 8),
        "truncated_msgpack_map": frame(b"\x82\xa4type"),
        "frame_is_a_list": frame(msgpack.packb(["heartbeat", 1])),
        "map_without_type": frame(msgpack.packb({"id": "x", "ts": 1.0})),
        "type_is_a_map": frame(msgpack.packb({"type": {"a": 1}})),
        "trailing_bytes_in_frame": frame(msgpack.packb({"type": "heartbeat", "ts": 1.0}) + b"\x00\x01"),
        "chain_vote_body_is_a_string": encode_frame({"type": "chain_vote", "id": "ab" * 12, "ts": time.time(),
                                                     "hops": 0, "body": "x" * 100}),
    }

    vote_sender = NodeIdentity.generate()

    async def run() -> dict[str, str]:
        reasons = {}
        for name, data in attacks.items():
            identity = vote_sender if name == "chain_vote_body_is_a_string" else NodeIdentity.generate()
            peer = await linked(target, identity, chain_id)
            if name == "chain_vote_body_is_a_string":   # origin and dst must be right for the body to be read
                message = msgpack.unpackb(data[4:])
                message |= {"origin": identity.node_id, "dst": target.node_id}
                data = encode_frame(message)
            peer.send_plain(data)
            reasons[name] = await closed_with(peer)
        # a ciphertext with one bit flipped: the channel must refuse it (nobody can tell who flipped it)
        peer = await linked(target, NodeIdentity.generate(), chain_id)
        assert peer.channel is not None
        sealed = bytearray(peer.channel.seal(encode_frame({"type": "heartbeat", "ts": time.time()})))
        sealed[-1] ^= 0x01
        peer.send_raw(bytes(sealed))
        reasons["flipped_ciphertext_bit"] = await closed_with(peer)
        return reasons

    reasons = asyncio.run(run())
    print("close reasons:", reasons)
    assert reasons["oversized"] == "frame_too_large", reasons
    assert reasons["flipped_ciphertext_bit"] == "decrypt_failed", reasons
    # a well-framed message whose chain body is bad is the chain layer's to judge: penalised, named, not a crash
    wait_until(lambda: any(r.startswith("malformed_vote") for r in penalties_logged(target, vote_sender.node_id)), 5,
               message="the chain layer penalises a malformed vote's sender")
    del reasons["chain_vote_body_is_a_string"]
    for name, reason in reasons.items():
        assert reason not in ("still_open", "closed", "heartbeat_timeout"), (name, reason)   # closed for what it sent
    violations = target.status()["p2p"]["violations"]
    assert violations.get("frame_too_large", 0) >= 1, violations
    honest_nodes_intact(nodes)


def test_slowloris_handshakes_are_cut_at_the_timeout_and_free_their_slots(chain3):
    nodes = chain3
    target = nodes[1]
    host, port = target.p2p_address.rsplit(":", 1)
    silent_count, drip_count = 40, 20

    async def hold(drip: bool) -> float | None:
        """Open a connection, send nothing (or one byte of a Noise message every 0.4 s); seconds until the node
        closed it (None if it was refused at once, before any timeout could apply)."""
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT + 15):
                while True:
                    if drip and not writer.is_closing():
                        writer.write(b"\x00")
                    try:
                        data = await asyncio.wait_for(reader.read(4096), 0.4 if drip else None)
                    except (asyncio.TimeoutError, TimeoutError):
                        continue
                    except (ConnectionError, OSError):
                        data = b""
                    if not data:
                        return time.monotonic() - opened
        finally:
            writer.close()

    async def run() -> list[float | None]:
        return await asyncio.gather(*[hold(False) for _ in range(silent_count)],
                                    *[hold(True) for _ in range(drip_count)])

    before = {n.node_id for n in nodes} - {target.node_id}
    durations = asyncio.run(run())
    closed_after: list[float] = []
    for d in durations:
        assert d is not None, durations
        closed_after.append(d)
    print(f"slowloris connections closed after {min(closed_after):.1f}..{max(closed_after):.1f} s")
    assert all(d is not None and d <= HANDSHAKE_TIMEOUT + 3.0 for d in closed_after), sorted(closed_after)
    # the node's slots are free again: a real handshake is admitted at once, honest links never dropped
    wait_until(lambda: try_handshake(target) == "open", 10, message="a handshake admitted after the slowloris")
    assert target.connected_ids() >= before
    honest_nodes_intact(nodes)


def test_one_host_cannot_take_every_inbound_slot_with_handshakes_in_progress(cluster):
    """Loopback is exempt from the per-IP caps unless INBOUND_LIMIT_LOOPBACK; with it on, an attacker on
    127.5.5.5 opening 40 silent connections holds at most MAX_INBOUND_PER_IP (4) of the 22 inbound slots and
    leaves room for a peer from 127.0.0.1 (every loopback address is one netgroup here, so one subnet
    cap covers both: the per-IP cap is what this shows)."""
    node = cluster.node("gate", inbound_limit_loopback="true", max_peers=30, found_after=0)
    host, port = node.p2p_address.rsplit(":", 1)

    async def attack() -> tuple[int, str]:
        held = []
        refused = 0
        for _ in range(40):
            reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.5.5.5", 0))
            held.append((reader, writer))
        await asyncio.sleep(0)
        for reader, _ in held:    # the node refuses past the per-IP cap at once: EOF or a short refusal
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.05)
                refused += 1 if data == b"" or len(data) < 200 else 0
            except (asyncio.TimeoutError, TimeoutError):
                pass
            except (ConnectionError, OSError):
                refused += 1
        outcome = await asyncio.to_thread(try_handshake, node)
        for _, writer in held:
            writer.close()
        return refused, outcome

    refused, outcome = asyncio.run(attack())
    print(f"attacker connections refused at once: {refused} of 40; honest handshake meanwhile: {outcome}")
    assert outcome == "open", outcome
    assert refused >= 40 - 4, refused          # MAX_INBOUND_PER_IP (4) may wait for their handshake timeout
