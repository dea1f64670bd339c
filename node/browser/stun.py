"""STUN binding answers on the browser endpoint's UDP port, so ICE needs no server outside the network.

A page and a node behind a NAT learn the address their NAT gives them (a server-reflexive candidate) by
asking a public node, the one the page is linked to, instead of a third party's STUN server. Only the
binding request (RFC 8489) is answered, with XOR-MAPPED-ADDRESS; no credentials, no relaying (TURN).
STUN and QUIC share the port: a STUN message starts with two zero bits and carries the magic cookie, a
QUIC packet always has its fixed bit (0x40) set. Sans-I/O: bytes in, bytes out.
"""
from __future__ import annotations

import ipaddress
import struct

MAGIC = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
HEADER = 20
MAX_REQUEST = 548               # a binding request is small; anything longer is not one we answer


def is_stun(data: bytes) -> bool:
    """Whether a datagram is a STUN message (and so not QUIC)."""
    return len(data) >= HEADER and data[0] < 0x40 and struct.unpack_from("!I", data, 4)[0] == MAGIC


def binding_answer(data: bytes, host: str, port: int) -> bytes | None:
    """The success answer to a binding request from (host, port), or None for anything else."""
    if not is_stun(data) or len(data) > MAX_REQUEST:
        return None
    kind, length = struct.unpack_from("!HH", data, 0)
    if kind != BINDING_REQUEST or length % 4 or HEADER + length != len(data):
        return None
    transaction = data[8:20]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    xport = port ^ (MAGIC >> 16)
    cookie = struct.pack("!I", MAGIC)
    if address.version == 4:
        raw = bytes(a ^ b for a, b in zip(address.packed, cookie))
        value = struct.pack("!BBH", 0, 1, xport) + raw
    else:
        mask = cookie + transaction
        raw = bytes(a ^ b for a, b in zip(address.packed, mask))
        value = struct.pack("!BBH", 0, 2, xport) + raw
    attribute = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    return struct.pack("!HHI", BINDING_SUCCESS, len(attribute), MAGIC) + transaction + attribute


def mapped_address(answer: bytes) -> tuple[str, int] | None:
    """The address a binding answer names (tests and tools read it)."""
    if len(answer) < HEADER or struct.unpack_from("!H", answer, 0)[0] != BINDING_SUCCESS:
        return None
    i = HEADER
    while i + 4 <= len(answer):
        kind, length = struct.unpack_from("!HH", answer, i)
        value = answer[i + 4:i + 4 + length]
        if kind == XOR_MAPPED_ADDRESS and len(value) >= 8:
            port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC >> 16)
            mask = struct.pack("!I", MAGIC) + answer[8:20]
            raw = bytes(a ^ b for a, b in zip(value[4:], mask))
            return str(ipaddress.ip_address(raw)), port
        i += 4 + length + (-length % 4)
    return None
