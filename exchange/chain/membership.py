"""Membership transactions: how the validator set changes, only through the ordered log.

- `join`: a node asks for a validator seat, signed by its node key. Applied when the set has room
  (`max_validators`) and is not pinned; the proposer only includes a join from a node it hears
  from and that is caught up, so a seat goes to a live node.
- `leave`: a validator gives up its seat, signed by its node key (never the last one).
- `remove`: any validator's proposal may remove a validator that the chain itself shows absent
  (no signature in the last `absent_blocks` recorded commits, spanning at least `absent_ms` of
  block time) or that signed two conflicting votes (both votes are the evidence). Its validity
  is decided from the chain's own records, so it needs no signature.

At most one membership change per block; it takes effect at the next height (epoch + 1). Requests
carry the height they were made at and expire `REQUEST_TTL` heights later, so an old join cannot
be replayed to put a removed validator back.
"""
from __future__ import annotations

from typing import Any, Callable

from exchange.chain.blocks import Malformed, Vote
from exchange.chain.codec import pack
from exchange.chain.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES

REQUEST_TTL = 200
KINDS = ("join", "leave", "remove")


def request_bytes(chain_id: str, kind: str, key: bytes, at_height: int) -> bytes:
    return pack(["exchange-node/membership/v1", chain_id, kind, key, at_height])


class MembershipTx:
    __slots__ = ("kind", "key", "at_height", "sig", "reason", "evidence")

    def __init__(self, kind: str, key: bytes, at_height: int = 0, sig: bytes | None = None, reason: str = "",
                 evidence: tuple[Vote, Vote] | None = None) -> None:
        self.kind, self.key, self.at_height, self.sig = kind, key, at_height, sig
        self.reason, self.evidence = reason, evidence

    @classmethod
    def request(cls, kind: str, chain_id: str, key: bytes, at_height: int, sign: Callable[[bytes], bytes]) -> "MembershipTx":
        return cls(kind, key, at_height, sign(request_bytes(chain_id, kind, key, at_height)))

    @classmethod
    def removal(cls, key: bytes, reason: str, evidence: tuple[Vote, Vote] | None = None) -> "MembershipTx":
        return cls("remove", key, reason=reason, evidence=evidence)

    def signature_valid(self, chain_id: str, verify: Callable[[bytes, bytes, bytes], bool]) -> bool:
        if self.kind == "remove":
            if self.reason == "equivocation":
                a, b = self.evidence or (None, None)
                return (a is not None and b is not None and a.validator == self.key == b.validator
                        and a.kind == b.kind and a.height == b.height and a.round == b.round
                        and a.block_id != b.block_id and a.valid(chain_id, verify) and b.valid(chain_id, verify))
            return self.reason == "absent" and self.evidence is None
        return self.sig is not None and verify(self.key, self.sig, request_bytes(chain_id, self.kind, self.key,
                                                                                 self.at_height))

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.key.hex()}:{self.at_height}"

    def wire(self) -> list:
        if self.kind == "remove":
            evidence = None if self.evidence is None else [self.evidence[0].wire(), self.evidence[1].wire()]
            return ["remove", self.key, self.reason, evidence]
        return [self.kind, self.key, self.at_height, self.sig]

    @classmethod
    def from_wire(cls, data: Any) -> "MembershipTx":
        if type(data) is not list or not data or data[0] not in KINDS:
            raise Malformed("bad_membership")
        if data[0] == "remove":
            if len(data) != 4 or type(data[1]) is not bytes or len(data[1]) != PUBLIC_KEY_BYTES \
                    or data[2] not in ("absent", "equivocation"):
                raise Malformed("bad_membership")
            evidence = None
            if data[3] is not None:
                if type(data[3]) is not list or len(data[3]) != 2:
                    raise Malformed("bad_membership")
                evidence = (Vote.from_wire(data[3][0]), Vote.from_wire(data[3][1]))
            return cls.removal(data[1], data[2], evidence)
        if len(data) != 4 or type(data[1]) is not bytes or len(data[1]) != PUBLIC_KEY_BYTES \
                or type(data[2]) is not int or not 0 <= data[2] < (1 << 62) \
                or type(data[3]) is not bytes or len(data[3]) != SIGNATURE_BYTES:
            raise Malformed("bad_membership")
        return cls(data[0], data[1], data[2], data[3])

    def __repr__(self) -> str:
        return f"MembershipTx({self.kind} {self.key.hex()[:12]} {self.reason or self.at_height})"
