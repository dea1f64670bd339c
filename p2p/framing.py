"""Length-prefixed msgpack frames: 4-byte big-endian length, then one msgpack map.

The decoder is incremental (any chunking, down to one byte at a time), checks the length
header against `max_frame_bytes` before buffering a body, and unpacks with container limits
so a tiny frame cannot expand into a huge object.
"""
from __future__ import annotations

import struct
from typing import Callable, Mapping, cast

import msgpack

from p2p.messages import Message
from p2p.close_reason import CloseReason

DEFAULT_MAX_FRAME_BYTES = 1 << 20
HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from

# Container limits: generous for real traffic (sync batches, peer lists), tiny next to memory.
MAX_ARRAY_LEN = 100_000
MAX_MAP_LEN = 10_000


class FrameError(Exception):
    """A frame that cannot be accepted; `reason` is the goodbye/close reason sent to the peer."""

    reason: CloseReason = CloseReason.MALFORMED_FRAME

    def __init__(self, message: str) -> None:
        super().__init__(message)


class FrameTooLarge(FrameError):
    reason = CloseReason.FRAME_TOO_LARGE


class MalformedFrame(FrameError):
    reason = CloseReason.MALFORMED_FRAME


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb


# msgpack body only; broadcasts encode once and reuse the bytes for every link. The packer's own
# bound method, not a wrapper: the link's send path calls it once per message.
encode_body: Callable[[Mapping[str, object]], bytes] = _packb


def encode_frame(message: Mapping[str, object], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    body = _packb(message)
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds limit {max_frame_bytes}")
    return cast("bytes", HEADER.pack(len(body)) + body)


def frame_body(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes | bytearray | memoryview, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Unpack one body into a message map, or raise MalformedFrame."""
    try:
        message = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=max_frame_bytes,
            max_bin_len=max_frame_bytes,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
        )
    except Exception as exc:  # noqa: BLE001 - msgpack raises ValueError, TypeError, ExtraData, StackError, ...
        raise MalformedFrame(f"undecodable msgpack body: {type(exc).__name__}") from None
    if type(message) is not dict or type(message.get("type")) is not str:
        raise MalformedFrame("frame is not a map with a string 'type'")
    return message


class FrameDecoder:
    """Turns a byte stream into message maps. After a FrameError the stream is unusable: close it."""

    __slots__ = ("max_frame_bytes", "_buffer", "_need")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._need = 0  # body length of the frame being buffered (0 = reading a header)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray | memoryview = buffer
        else:
            source = data  # common case: the chunk starts on a frame boundary; no copy into the buffer
        messages: list[Message] = []
        limit = self.max_frame_bytes
        pos = 0
        end = len(source)
        try:
            with memoryview(source) as view:  # frames are decoded in place, never sliced into copies
                while end - pos >= HEADER_SIZE:
                    length = _unpack_header(view, pos)[0]
                    if length > limit:
                        raise FrameTooLarge(f"length header {length} exceeds limit {limit}")
                    start = pos + HEADER_SIZE
                    stop = start + length
                    if stop > end:
                        self._need = length
                        break
                    try:  # decode_body inlined: this loop runs once per received frame
                        message = _unpackb(view[start:stop], raw=False, max_str_len=limit, max_bin_len=limit,
                                           max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN, max_ext_len=0)
                    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for hostile bytes
                        raise MalformedFrame(f"undecodable msgpack body: {type(exc).__name__}") from None
                    if type(message) is not dict or type(message.get("type")) is not str:
                        raise MalformedFrame("frame is not a map with a string 'type'")
                    messages.append(message)
                    pos = stop
                else:
                    self._need = 0
        finally:
            if source is buffer:
                if pos:
                    del buffer[:pos]
            elif pos < end:
                buffer += source[pos:]  # keep only the unfinished tail
        return messages
