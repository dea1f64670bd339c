"""The commitment's hashes, one domain byte each, so a leaf can never be read as a branch or a value as
either: SHA-256 from hashlib over exactly the bytes below, nothing else.

    value digest  H(0x03 || value)
    leaf          H(0x00 || key || value digest)
    branch        H(0x01 || bit (2 bytes, big-endian) || prefix || left || right)
    empty tree    H(0x02)

A branch commits to the bit it splits on and to the key bits above it (`prefix`: the first `bit` bits of
every key below it, in ceil(bit / 8) bytes with the bits past `bit` zero), so a verifier knows from the
branch alone which keys can lie under it and can tell that a hidden subtree holds none of a range.
"""
from __future__ import annotations

from hashlib import sha256

LEAF, BRANCH, EMPTY, VALUE = b"\x00", b"\x01", b"\x02", b"\x03"
DIGEST_BYTES = 32
MAX_KEY_BYTES = 32          # a path is at most 256 branches deep: walks of it recurse well within Python's limit
EMPTY_ROOT = sha256(EMPTY).digest()


def value_digest(value: bytes) -> bytes:
    return sha256(VALUE + value).digest()


def leaf_hash(key: bytes, digest: bytes) -> bytes:
    return sha256(LEAF + key + digest).digest()


def branch_hash(bit: int, prefix: bytes, left: bytes, right: bytes) -> bytes:
    return sha256(BRANCH + bit.to_bytes(2, "big") + prefix + left + right).digest()


def branch_head(bit: int, prefix: bytes) -> bytes:
    """What a branch's hash covers before its children's hashes: fixed while the branch lives, so kept with it."""
    return BRANCH + bit.to_bytes(2, "big") + prefix


def hash_branch(head: bytes, left: bytes, right: bytes) -> bytes:
    """`branch_hash` from a kept `branch_head`."""
    return sha256(head + left + right).digest()


def hash_leaf(key: bytes, value: bytes) -> bytes:
    """`leaf_hash` of a key and its value (not its digest)."""
    return sha256(LEAF + key + sha256(VALUE + value).digest()).digest()


def prefix_of(key: bytes, bit: int) -> bytes:
    """The first `bit` bits of `key`, in ceil(bit / 8) bytes, the bits past `bit` zero."""
    whole, rest = divmod(bit, 8)
    if not rest:
        return key[:whole]
    return key[:whole] + bytes([key[whole] & (0xFF << (8 - rest)) & 0xFF])


def bit_at(key: bytes, bit: int) -> int:
    """Bit `bit` of `key`, bit 0 the most significant of its first byte (so keys sort as big-endian numbers)."""
    return (key[bit >> 3] >> (7 - (bit & 7))) & 1


def first_difference(a: bytes, b: bytes) -> int | None:
    """The first bit where two keys of one length differ, None when they are equal."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return None if x == 0 else len(a) * 8 - x.bit_length()
