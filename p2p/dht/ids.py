"""Kademlia's id space: node ids are 160-bit (hex of the first 20 bytes of the key's sha256, so an id is
bound to a key and cannot be chosen freely without grinding keys), distance is XOR."""
from __future__ import annotations

import hashlib

ID_BITS = 160
ID_HEX = ID_BITS // 4


def id_int(node_id: str) -> int:
    """A node id (40 hex characters) as an integer; ValueError for anything else."""
    if len(node_id) != ID_HEX:
        raise ValueError(f"a node id is {ID_HEX} hex characters")
    return int(node_id, 16)


def distance(a: str, b: str) -> int:
    return id_int(a) ^ id_int(b)


def bucket_of(own: str, other: str) -> int:
    """The k-bucket `other` falls in from `own`'s point of view: the index of the highest differing bit
    (0..159); -1 for `own` itself."""
    return distance(own, other).bit_length() - 1


def key_for(name: str) -> str:
    """Where a name (a service) lives in the id space: the first 160 bits of its sha256."""
    return hashlib.sha256(name.encode()).digest()[:ID_BITS // 8].hex()
