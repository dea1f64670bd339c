"""The secure channel: identity binding in the Noise payload, refusals, protocol-1 peers, and the
length-prefixed AEAD stream (any chunking; tampering, replay and reordering detected)."""
from __future__ import annotations

import os
import random

import pytest

from node.identity import NodeIdentity
from p2p.close_reason import CloseReason
from p2p.framing import FrameDecoder, encode_frame
from p2p.secure.channel import (MAX_PLAINTEXT, ChannelError, SecureHandshake, StaticIdentity, refusal,
                                verify_identity)


def side(initiator: bool, identity: NodeIdentity | None = None) -> tuple[SecureHandshake, NodeIdentity]:
    identity = identity or NodeIdentity.generate()
    static = StaticIdentity(identity.sign, identity.public_key_bytes)
    return SecureHandshake(initiator, static, NodeIdentity.verify, NodeIdentity.node_id_for), identity


def run(initiator: SecureHandshake, responder: SecureHandshake, chunk: int | None = None) -> None:
    def deliver(target: SecureHandshake, data: bytes) -> bytes:
        if chunk is None:
            return target.feed(data)
        out = b""
        for i in range(0, len(data), chunk):
            out += target.feed(data[i:i + chunk])
        return out

    msg2 = deliver(responder, initiator.start())
    msg3 = deliver(initiator, msg2)
    assert initiator.done and not responder.done
    assert deliver(responder, msg3) == b""
    assert responder.done


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_handshake_proves_both_node_ids(chunk):
    initiator, i_id = side(True)
    responder, r_id = side(False)
    run(initiator, responder, chunk)
    assert initiator.remote_id == r_id.node_id and responder.remote_id == i_id.node_id
    assert initiator.remote_public_key == r_id.public_key_bytes
    assert initiator.handshake_hash == responder.handshake_hash
    a, b = initiator.transport(), responder.transport()
    assert b.open(a.seal(b"hello")) == b"hello"
    assert a.open(b.seal(b"world")) == b"world"


def test_a_static_key_signed_by_another_identity_is_refused():
    mallory = NodeIdentity.generate()
    victim = NodeIdentity.generate()
    static = StaticIdentity(mallory.sign, victim.public_key_bytes)  # claims the victim's key
    initiator = SecureHandshake(True, static, NodeIdentity.verify, NodeIdentity.node_id_for)
    responder, _ = side(False)
    msg2 = responder.feed(initiator.start())
    msg3 = initiator.feed(msg2)
    with pytest.raises(ChannelError) as caught:
        responder.feed(msg3)
    assert caught.value.reason == "bad_identity"
    with pytest.raises(ChannelError):
        verify_identity(b"\xc1", b"k" * 32, NodeIdentity.verify, NodeIdentity.node_id_for)


def test_refusal_and_protocol_1_peers_are_recognised():
    initiator, _ = side(True)
    initiator.start()
    data = refusal(CloseReason.TOO_MANY_PEERS)
    with pytest.raises(ChannelError) as caught:
        for byte in data:  # a refusal split anywhere
            initiator.feed(bytes([byte]))
    assert caught.value.reason == "remote_too_many_peers"
    initiator, _ = side(True)
    initiator.start()
    with pytest.raises(ChannelError) as caught:  # an unauthenticated refusal can never make us forget an address
        initiator.feed(refusal(CloseReason.NETWORK_MISMATCH))
    assert caught.value.reason == "remote_refused"

    responder, _ = side(False)
    v1_hello = encode_frame({"type": "handshake", "node_id": "a" * 40, "protocol": 1})
    with pytest.raises(ChannelError) as caught:
        responder.feed(v1_hello)
    assert caught.value.reason == "incompatible_version"
    decoded = FrameDecoder().feed(caught.value.reply)
    assert decoded[0]["type"] == "goodbye" and decoded[0]["reason"] == "incompatible_version"

    responder, _ = side(False)
    with pytest.raises(ChannelError) as caught:
        responder.feed(b"\x00\x21" + b"\x01" * 33)  # msg1 must be exactly the 32-byte ephemeral key
    assert caught.value.reason == "noise_handshake_failed"


def transports():
    initiator, _ = side(True)
    responder, _ = side(False)
    run(initiator, responder)
    return initiator.transport(), responder.transport()


def test_stream_survives_any_chunking_and_large_buffers():
    a, b = transports()
    rng = random.Random(5)
    payloads = [os.urandom(rng.choice([0, 1, 100, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 200_000])) for _ in range(12)]
    wire = b"".join(a.seal(p) for p in payloads)
    got = bytearray()
    pos = 0
    while pos < len(wire):
        step = rng.randint(1, 70_000)
        got += b.open(wire[pos:pos + step])
        pos += step
    assert bytes(got) == b"".join(payloads)
    assert b.buffered == 0


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "inject", "short"])
def test_tampering_is_detected(attack):
    a, b = transports()
    first, second = a.seal(b"first message"), a.seal(b"second message")
    if attack == "flip":
        wire = first[:5] + bytes([first[5] ^ 0x40]) + first[6:]
    elif attack == "replay":
        assert b.open(first) == b"first message"
        wire = first
    elif attack == "reorder":
        wire = second + first
    elif attack == "inject":
        wire = b"\x00\x20" + os.urandom(32)
    else:
        wire = b"\x00\x05hello"
    with pytest.raises(ChannelError) as caught:
        b.open(wire)
    assert caught.value.reason == "decrypt_failed"
