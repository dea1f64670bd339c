"""What a proof is, on the wire and in memory: a pruned copy of the tree with every subtree a query does not
need replaced by its hash, and the typed reasons a proof is refused.

A proof answers one range query [lo, hi] (one key is the range [key, key]): it reveals every leaf in the range
with its value, the leaves it passes that lie outside the range by key and value digest only, every branch on
the way with its split bit and prefix, and hides the rest as bare hashes. The query itself is not in the
proof: the verifier is told what it asked, so a proof cannot answer another question than the one put.

Encoding (msgpack, bytes as bin, ints as the shortest uint):
    proof   [1, node] or [1, nil] for the empty tree
    node    [0, hash] hidden | [1, key, value] leaf in range | [2, key, value digest] leaf outside the range
            | [3, bit, prefix, left node, right node] branch
Decoding accepts only what encoding produces, byte for byte: any other bytes, however close, are MALFORMED.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union, cast

import msgpack

from exchange.commitments.hashing import DIGEST_BYTES, MAX_KEY_BYTES

VERSION = 1
MAX_PROOF_BYTES = 16 << 20     # a proof bigger than this is refused before it is parsed
_HIDDEN, _LEAF_VALUE, _LEAF_DIGEST, _BRANCH = 0, 1, 2, 3


class Failure(enum.Enum):
    """Why a proof was refused; each names one way a proof can be wrong."""
    MALFORMED = "malformed"                  # not the canonical encoding of a proof
    BAD_QUERY = "bad_query"                  # the question itself: keys of another length, lo > hi
    WRONG_KEY_LENGTH = "wrong_key_length"    # a leaf key not as long as the query's keys
    BIT_ORDER = "bit_order"                  # a branch not below its parent's split bit, or past the key
    BAD_PREFIX = "bad_prefix"                # a branch prefix of the wrong length or with bits set past its bit
    OFF_PATH = "off_path"                    # a leaf or branch whose key bits contradict where it hangs
    INCOMPLETE = "incomplete"                # a hidden subtree that could hold a key of the range
    VALUE_MISSING = "value_missing"          # a leaf in the range given without its value
    VALUE_UNASKED = "value_unasked"          # a leaf outside the range given with its value
    ROOT_MISMATCH = "root_mismatch"          # the proof hashes to another root than the trusted one


class ProofError(Exception):
    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Hidden:
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeafValue:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class LeafDigest:
    key: bytes
    digest: bytes


@dataclass(frozen=True, slots=True)
class Branch:
    bit: int
    prefix: bytes
    left: "Node"
    right: "Node"


Node = Union[Hidden, LeafValue, LeafDigest, Branch]


@dataclass(frozen=True, slots=True)
class Proof:
    node: Node | None          # None: the tree is empty

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb([VERSION, None if self.node is None else _pack(self.node)], use_bin_type=True))

    @staticmethod
    def decode(data: bytes) -> "Proof":
        if len(data) > MAX_PROOF_BYTES:
            raise ProofError(Failure.MALFORMED, f"{len(data)} bytes, at most {MAX_PROOF_BYTES}")
        try:
            raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # noqa: BLE001 - any failure to parse peer bytes is one refusal
            raise ProofError(Failure.MALFORMED, f"not msgpack: {type(exc).__name__}") from None
        if not isinstance(raw, list) or len(raw) != 2 or raw[0] != VERSION or raw[0] is True:
            raise ProofError(Failure.MALFORMED, "not [version 1, node]")
        proof = Proof(None if raw[1] is None else _unpack(raw[1], 0))
        if proof.encode() != data:
            raise ProofError(Failure.MALFORMED, "not the canonical encoding")
        return proof


def _pack(node: Node) -> list[object]:
    if isinstance(node, Hidden):
        return [_HIDDEN, node.hash]
    if isinstance(node, LeafValue):
        return [_LEAF_VALUE, node.key, node.value]
    if isinstance(node, LeafDigest):
        return [_LEAF_DIGEST, node.key, node.digest]
    return [_BRANCH, node.bit, node.prefix, _pack(node.left), _pack(node.right)]


def _digest(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
        raise ProofError(Failure.MALFORMED, "a hash is not 32 bytes")
    return value


def _key(value: object) -> bytes:
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_KEY_BYTES:
        raise ProofError(Failure.MALFORMED, f"a key is not 1..{MAX_KEY_BYTES} bytes")
    return value


def _unpack(raw: object, depth: int) -> Node:
    if depth > MAX_KEY_BYTES * 8:
        raise ProofError(Failure.MALFORMED, "nested deeper than any key has bits")
    if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
        raise ProofError(Failure.MALFORMED, "a node is not [kind, ...]")
    kind = raw[0]
    if kind == _HIDDEN and len(raw) == 2:
        return Hidden(_digest(raw[1]))
    if kind == _LEAF_VALUE and len(raw) == 3 and isinstance(raw[2], bytes):
        return LeafValue(_key(raw[1]), raw[2])
    if kind == _LEAF_DIGEST and len(raw) == 3:
        return LeafDigest(_key(raw[1]), _digest(raw[2]))
    if kind == _BRANCH and len(raw) == 5 and type(raw[1]) is int and isinstance(raw[2], bytes):
        if not 0 <= raw[1] < MAX_KEY_BYTES * 8:
            raise ProofError(Failure.MALFORMED, "a split bit past any key")
        return Branch(raw[1], raw[2], _unpack(raw[3], depth + 1), _unpack(raw[4], depth + 1))
    raise ProofError(Failure.MALFORMED, f"no node of kind {kind!r} with {len(raw)} fields")
