"""Canonical bytes for everything the chain hashes or signs.

msgpack of lists, ints, str and bytes (never maps, never floats) has exactly one encoding for
one value, so every node hashes and signs the same bytes. Each signed kind carries its own
domain string so a signature of one kind can never be replayed as another.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any, cast

import msgpack

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_BIN8, _BIN16, _BIN32 = struct.Struct(">BB"), struct.Struct(">BH"), struct.Struct(">BI")

# A decoded msgpack value: a list, int, str, bytes, ... that no static type describes; each reader checks
# the shape it expects (a `from_wire`, or a destructuring under `except (TypeError, ValueError)`).
Unpacked = Any


def pack(value: object) -> bytes:
    return cast("bytes", _packb(value))


def bin_header(size: int) -> bytes:
    """What msgpack writes before `size` bytes packed as bin (msgpack's Packer has no call for it): so a value
    holding a large bytes field can be packed, or hashed, around those bytes rather than with a copy of them.
    The tests check it against msgpack's own packing at every length where the format changes."""
    if size < 1 << 8:
        return _BIN8.pack(0xC4, size)
    if size < 1 << 16:
        return _BIN16.pack(0xC5, size)
    return _BIN32.pack(0xC6, size)


def unpack(data: bytes, max_bytes: int = 64 * 1024 * 1024) -> Unpacked:
    """Decode bytes we stored or received; raises ValueError on anything malformed."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_str_len=max_bytes, max_bin_len=max_bytes,
                               max_array_len=1_000_000, max_map_len=100_000, max_ext_len=0)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types for bad input
        raise ValueError(f"undecodable record: {type(exc).__name__}") from None


def digest(domain: str, value: object) -> bytes:
    """sha256 over the domain-tagged canonical encoding."""
    return hashlib.sha256(_packb([domain, value])).digest()
