"""Framing: any chunking decodes exactly; garbage only ever raises FrameError; limits hold before allocation."""
from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from p2p.framing import (FrameDecoder, FrameError, FrameTooComplex, FrameTooLarge, MalformedFrame, container_budget,
                         decode_body, encode_frame)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=30),
                    st.binary(max_size=30), st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                      max_leaves=20)
messages = st.builds(lambda t, extra: {"type": t, **extra}, st.text(min_size=1, max_size=12),
                     st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "type"), values, max_size=6))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@given(st.lists(messages, max_size=8), st.lists(st.integers(0, 10_000), max_size=20))
@settings(max_examples=300, deadline=None)
def test_any_split_decodes_back_exactly(batch, cuts):
    stream = b"".join(encode_frame(m) for m in batch)
    decoder = FrameDecoder()
    out = []
    for piece in split_at(stream, cuts):
        out.extend(decoder.feed(piece))
    assert out == batch
    assert decoder.buffered == 0


def test_one_byte_at_a_time():
    batch = [{"type": "order", "i": i, "blob": b"x" * i} for i in range(50)]
    stream = b"".join(encode_frame(m) for m in batch)
    decoder = FrameDecoder()
    out = []
    for byte in stream:
        out.extend(decoder.feed(bytes([byte])))
    assert out == batch


@given(st.binary(max_size=2000))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_frame_error(garbage):
    decoder = FrameDecoder(max_frame_bytes=4096)
    try:
        for message in decoder.feed(garbage):
            assert isinstance(message, dict) and isinstance(message["type"], str)
    except FrameError:
        pass


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_garbage_bodies_with_valid_headers_raise_only_frame_error(body):
    try:
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)
    except FrameError:
        pass


def test_oversized_header_rejected_before_buffering_body():
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">I", 10**9) + b"abc")
    assert info.value.reason == "frame_too_large"
    assert decoder.buffered <= 8  # only the header and the few bytes behind it, never a body allocation


def test_partial_frame_waits_and_limit_applies_to_header():
    decoder = FrameDecoder(max_frame_bytes=100)
    frame = encode_frame({"type": "x", "p": b"y" * 50})
    assert decoder.feed(frame[:10]) == []
    assert decoder.feed(frame[10:]) == [{"type": "x", "p": b"y" * 50}]
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 101))


def test_encoder_refuses_oversized_frames():
    with pytest.raises(FrameTooLarge):
        encode_frame({"type": "x", "p": b"z" * 2000}, max_frame_bytes=1000)


@pytest.mark.parametrize("body", [
    msgpack.packb([1, 2, 3]),             # not a map
    msgpack.packb({"no_type": 1}),        # no type
    msgpack.packb({"type": 7}),           # type not a string
    msgpack.packb({1: "x", "type": "a"}),  # non-string key
    b"\xc1",                              # reserved byte
    msgpack.packb({"type": "a"}) + b"\x00",  # trailing data
])
def test_malformed_bodies(body):
    with pytest.raises(MalformedFrame):
        decode_body(body)


def test_tiny_frame_cannot_declare_huge_container():
    # array32 header claiming 2**31 elements in a 5-byte body: rejected, not allocated
    with pytest.raises(MalformedFrame):
        decode_body(b"\xdd\x80\x00\x00\x00")
    with pytest.raises(MalformedFrame):
        decode_body(b"\xdf\x80\x00\x00\x00")


def test_deep_nesting_is_rejected_cleanly():
    body = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(MalformedFrame):
        decode_body(msgpack.packb({"type": "x"})[:0] + body)


def expansion_frame(size: int = 1 << 20) -> dict:
    """The attack: a frame of its size's worth of empty arrays, one byte each."""
    per = 99_000
    return {"type": "chain_tx", "body": [[[] for _ in range(per)] for _ in range(max(1, (size - 64) // per))]}


@pytest.mark.parametrize("size", [1 << 20, 64 << 10, 4 << 10])
def test_a_frame_of_empty_arrays_is_refused_before_it_is_built(size):
    """Refused both as a whole body and fed through the decoder, with the reason that penalises and cuts off."""
    frame = encode_frame(expansion_frame(size) if size > 100_000 else
                         {"type": "x", "body": [[] for _ in range(size - 16)]})
    with pytest.raises(FrameTooComplex) as refused:
        FrameDecoder().feed(frame)
    assert refused.value.reason == "frame_too_complex"
    with pytest.raises(FrameTooComplex):
        decode_body(frame[4:])


def test_the_budget_is_counted_exactly_around_its_edge():
    """Empty maps as well as arrays, at the budget passes and one past it is refused, whatever else is in the
    body (binary payloads full of container-like bytes cost nothing)."""
    def body(containers: int, padding: int) -> bytes:
        return msgpack.packb({"type": "x", "pad": b"\x90" * padding, "maps": [{} for _ in range(containers - 2)]},
                             use_bin_type=True)
    for padding in (0, 50_000):
        fits = next(n for n in range(100, 20_000) if n > container_budget(len(body(n, padding))))
        assert decode_body(body(fits - 1, padding))["type"] == "x"
        with pytest.raises(FrameTooComplex):
            decode_body(body(fits, padding))


def signed_txs(count: int, ops: int) -> list:
    import hashlib
    from exchange.app.txs import CancelOp, NewOrderOp, Op, sign_tx
    from exchange.crypto import SigningKey
    key = SigningKey(hashlib.sha256(b"framing").digest())
    chosen: list[Op] = [NewOrderOp("BTC-USD", "buy", "limit", "100.00", "1", None), CancelOp("A-B", "x")]
    return [sign_tx(key.sign, key.public_key, "ab" * 32, f"n{i}", 10**12, [chosen[i % 2]] * ops).wire()
            for i in range(count)]


@pytest.mark.parametrize("count,ops", [(1, 1), (200, 1), (200, 50), (2000, 1), (40, 250)])
def test_honest_frames_of_real_types_pass(count, ops):
    """Proposals of real signed transactions (orders, and the shortest cancels a transaction may hold: the densest
    in containers of anything a chain carries), up to as big as a frame holds, decode as they were."""
    import os
    from exchange.chain.types.blocks import Block, Header, Proposal
    txs = signed_txs(count, ops)
    header = Header("ab" * 32, 7, 1_700_000_000_000, os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32),
                    Block.txs_hash(txs), None)
    proposal = Proposal(7, 0, -1, Block(header, txs), os.urandom(32), os.urandom(64))
    message = {"type": "chain_proposal", "body": proposal.wire()}
    frame = encode_frame(message)
    assert FrameDecoder().feed(frame) == [message]
    assert decode_body(frame[4:]) == message
    held, stack = 0, list[object]([message])
    while stack:
        value = stack.pop()
        if isinstance(value, (list, dict)):
            held += 1
            stack.extend(value.values() if isinstance(value, dict) else value)
    assert held <= container_budget(len(frame)) * 0.6
