"""Length-prefixed msgpack frames: 4-byte big-endian length, then one msgpack map.

The decoder is incremental (any chunking, down to one byte at a time), checks the length
header against `max_frame_bytes` before buffering a body, and unpacks with container limits
so a tiny frame cannot expand into a huge object. A body must also cost what it weighs: its
arrays and maps, what decoding allocates and the garbage collector then walks, are counted as
they are built and refused past a budget per byte (the why is in docs/tradeoffs.md).
"""
from __future__ import annotations

import gc
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


class FrameTooComplex(MalformedFrame):
    """More arrays and maps than a frame of its size may hold: no honest node writes one. A MalformedFrame wherever
    a body inside a message is decoded (a relay's, a Grenache frame's), so it is refused as one there."""
    reason = CloseReason.FRAME_TOO_COMPLEX


# A body may hold CONTAINER_FLOOR arrays and maps, and one more per CONTAINER_BYTES bytes: a valid transaction
# holds one per 14 bytes at the densest (the shortest cancels), an empty array is one byte. Nesting is bounded by
# msgpack itself (1,024 levels), each level a container this budget counts.
CONTAINER_FLOOR = 256
CONTAINER_BYTES = 8


def container_budget(size: int) -> int:
    return CONTAINER_FLOOR + size // CONTAINER_BYTES


class _Count:
    """msgpack's hook for each array and map it completes: counts them, and stops the decoding past the budget."""

    __slots__ = ("left", "budget")

    def __init__(self, budget: int) -> None:
        self.left = self.budget = budget

    def take(self, value: object) -> object:
        self.left -= 1
        if self.left < 0:
            raise FrameTooComplex(f"more than {self.budget} arrays and maps")
        return value


def _unpack(body: bytes | bytearray | memoryview, limit: int) -> object:
    """One msgpack body, within the container limits and the weight budget (FrameTooComplex past it)."""
    size = len(body)
    budget = CONTAINER_FLOOR + size // CONTAINER_BYTES
    if size <= budget:
        return _unpackb(body, raw=False, max_str_len=limit, max_bin_len=limit, max_array_len=MAX_ARRAY_LEN,
                        max_map_len=MAX_MAP_LEN, max_ext_len=0)
    # Counted by a hook on each array and map msgpack completes (a Python call per container: cheaper than a scan
    # of the bytes for all but the densest bodies). What one body builds is freed or kept whole, so the collector
    # has nothing to find in it while it is built; run, it walks every container built so far, again and again
    # (msgpack's own advice: disable it for big messages).
    collecting = gc.isenabled()
    gc.disable()
    try:
        take = _Count(budget).take
        return _unpackb(body, raw=False, max_str_len=limit, max_bin_len=limit, max_array_len=MAX_ARRAY_LEN,
                        max_map_len=MAX_MAP_LEN, max_ext_len=0, list_hook=take, object_hook=take)
    finally:
        if collecting:
            gc.enable()


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
        message = _unpack(body, max_frame_bytes)
    except FrameTooComplex:
        raise
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
                        message = _unpack(view[start:stop], limit)
                    except FrameTooComplex:
                        raise
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
