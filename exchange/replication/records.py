"""Replicated records: order/cancel events chained per origin, and signed checkpoints of a chain head.

An event is `[origin, seq, lamport, prev, body]`: `seq` is the origin's gap-free sequence number,
`prev` the hash of the origin's previous event (GENESIS for seq 1), `body` the command. Its hash is
sha256 over the canonical msgpack encoding of that list, so each origin's events form a hash chain.
A checkpoint `[origin, seq, head, lamport, public_key, signature]` is the origin's Ed25519
signature over (origin, seq, head hash, lamport): it authenticates the whole chain up to `seq` and
promises that every later event of that origin has a Lamport time above `lamport`.

Everything here is pure: parse (with strict shape checks), encode, hash, sign, verify.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import msgpack

from exchange.orders import OrderType, SelfTradeMode, Side, order_id_from_key

GENESIS = b"\x00" * 32
CHECKPOINT_DOMAIN = b"exchange-node/checkpoint/1|"
MAX_LAMPORT = (1 << 62)
MAX_SEQ = (1 << 62)
MAX_ACCOUNT = 64
MAX_MARKET = 32
MAX_ORDER_ID = 128
ORIGIN_LEN = 40

SIDES = {s.value: s for s in Side}
TYPES = {t.value: t for t in OrderType}
STP_MODES = {m.value: m for m in SelfTradeMode}

_packb = msgpack.Packer(use_bin_type=True).pack
_sha256 = hashlib.sha256

Key = tuple[int, str, int]


class MalformedRecord(ValueError):
    """A record whose shape or types are wrong; `code` names the problem."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _is_str(value: Any, high: int, low: int = 1) -> bool:
    return type(value) is str and low <= len(value) <= high


def check_body(body: Any) -> list:
    """Validate an event body's shape (values the engine judges later); returns it as a list."""
    if type(body) is tuple:
        body = list(body)
    if type(body) is not list or not body:
        raise MalformedRecord("bad_body")
    op = body[0]
    if op == "n":
        if len(body) != 8:
            raise MalformedRecord("bad_body")
        _, market, side, kind, price, qty, account, stp = body
        if not (_is_str(market, MAX_MARKET) and side in SIDES and kind in TYPES
                and (price is None or _is_int(price, 1, MAX_LAMPORT)) and _is_int(qty, 1, MAX_LAMPORT)
                and _is_str(account, MAX_ACCOUNT, 0) and (stp is None or stp in STP_MODES)):
            raise MalformedRecord("bad_order")
    elif op == "c":
        if len(body) != 4:
            raise MalformedRecord("bad_body")
        _, market, order_id, account = body
        if not (_is_str(market, MAX_MARKET) and _is_str(order_id, MAX_ORDER_ID)
                and (account is None or _is_str(account, MAX_ACCOUNT, 0))):
            raise MalformedRecord("bad_cancel")
    else:
        raise MalformedRecord("bad_op")
    return body


def cancel_body(market: str, order_id: str, account: str | None = None) -> list:
    return check_body(["c", market, order_id, account])


class ReplEvent:
    """One immutable order or cancel event of one origin; `key` orders all events everywhere."""

    __slots__ = ("origin", "seq", "lamport", "prev", "body", "hash", "key", "id")

    def __init__(self, origin: str, seq: int, lamport: int, prev: bytes, body: list) -> None:
        self.origin = origin
        self.seq = seq
        self.lamport = lamport
        self.prev = prev
        self.body = body
        self.hash = _sha256(_packb([origin, seq, lamport, prev, body])).digest()
        self.key: Key = (lamport, origin, seq)
        self.id = order_id_from_key(self.key)

    @property
    def is_order(self) -> bool:
        return self.body[0] == "n"

    @property
    def market(self) -> str:
        return self.body[1]

    def wire(self) -> list:
        return [self.origin, self.seq, self.lamport, self.prev, self.body]

    @classmethod
    def from_wire(cls, data: Any) -> "ReplEvent":
        """Parse and check an event received from anyone; raises MalformedRecord."""
        if type(data) not in (list, tuple) or len(data) != 5:
            raise MalformedRecord("bad_event")
        origin, seq, lamport, prev, body = data
        if not (_is_str(origin, ORIGIN_LEN, ORIGIN_LEN) and _is_int(seq, 1, MAX_SEQ)
                and _is_int(lamport, 1, MAX_LAMPORT) and type(prev) is bytes and len(prev) == 32):
            raise MalformedRecord("bad_event")
        return cls(origin, seq, lamport, prev, check_body(body))

    def __repr__(self) -> str:
        return f"ReplEvent({self.key} {self.body})"


class Checkpoint:
    """An origin's signed statement: my chain up to `seq` ends in `head`; my later events are above `lamport`."""

    __slots__ = ("origin", "seq", "head", "lamport", "public_key", "signature")

    def __init__(self, origin: str, seq: int, head: bytes, lamport: int, public_key: bytes, signature: bytes) -> None:
        self.origin = origin
        self.seq = seq
        self.head = head
        self.lamport = lamport
        self.public_key = public_key
        self.signature = signature

    @staticmethod
    def signed_bytes(origin: str, seq: int, head: bytes, lamport: int) -> bytes:
        return CHECKPOINT_DOMAIN + _packb([origin, seq, head, lamport])

    @classmethod
    def create(cls, origin: str, seq: int, head: bytes, lamport: int, public_key: bytes,
               sign: Callable[[bytes], bytes]) -> "Checkpoint":
        return cls(origin, seq, head, lamport, public_key, sign(cls.signed_bytes(origin, seq, head, lamport)))

    def wire(self) -> list:
        return [self.origin, self.seq, self.head, self.lamport, self.public_key, self.signature]

    @classmethod
    def from_wire(cls, data: Any) -> "Checkpoint":
        if type(data) not in (list, tuple) or len(data) != 6:
            raise MalformedRecord("bad_checkpoint")
        origin, seq, head, lamport, public_key, signature = data
        if not (_is_str(origin, ORIGIN_LEN, ORIGIN_LEN) and _is_int(seq, 0, MAX_SEQ)
                and _is_int(lamport, 0, MAX_LAMPORT) and type(head) is bytes and len(head) == 32
                and type(public_key) is bytes and len(public_key) == 32
                and type(signature) is bytes and len(signature) == 64):
            raise MalformedRecord("bad_checkpoint")
        return cls(origin, seq, head, lamport, public_key, signature)

    def valid(self, verify: Callable[[bytes, bytes, bytes], bool], node_id_for: Callable[[bytes], str]) -> bool:
        """The key belongs to the origin and the signature is the origin's."""
        return (node_id_for(self.public_key) == self.origin
                and verify(self.public_key, self.signature,
                           self.signed_bytes(self.origin, self.seq, self.head, self.lamport)))

    def __repr__(self) -> str:
        return f"Checkpoint({self.origin[:8]} seq={self.seq} lamport={self.lamport})"


def chain_hash(previous: bytes, item: bytes) -> bytes:
    """Running hash: sha256(previous || item)."""
    return _sha256(previous + item).digest()


def pack(data: Any) -> bytes:
    return _packb(data)
