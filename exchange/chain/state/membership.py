"""Membership transactions: how the validator set changes, only through the ordered log, and only by grant.

A seat is never taken. A node becomes a *standby* (approved, waiting for a seat) in one of two ways:
- `approve add`: a current validator's signed approval (its operator ran `exchange-node validators add`);
  once more than two thirds of the current validators approved, the node is in standby;
- `join`: signed with the key of a join token a validator issued through the log (`grant`, with a use
  count and an expiry; any validator may `revoke` it), while the token has uses left.
A standby shows it is live and caught up with `alive`: signed by its own key, naming a recent block by its
id, so only a node that holds the chain can send one; the validators' own record of these, not a standby's
claims, decides who is live enough to take a seat. A validator that left gracefully asks back with `alive`.

Standbys take seats only by a `promote` a proposer puts in its block, and only to a size the genesis'
seat rule allows (`bft`: 1, 4, 7 ...), or as the successor of a validator that leaves or is jailed,
so the set keeps its size. The set changes by three kinds, each determining the next set from the
current one alone (what epoch proofs replay without any other state):
- `leave`: a validator gives its seat back, signed by its own key, naming an optional successor;
- `remove`: `absent` (neither signed nor proposed for the genesis' window: jailed, its approval stands
  so it gets its seat back when it returns), `equivocation` (two conflicting signed votes: banned) or
  `approved` (more than two thirds approved `remove`), with an optional successor;
- `promote`: standbys take seats.
`join` and `approve` change only the standby list and the approvals (see `seats.py` for the rules).

One more kind is the way out of a permanent halt (validators gone for good, see `recovery.py`):
- `recover`: the validators that remain take the chain on from the last certified block, as the whole
  new set. It is never proposed through consensus: it is the only transaction of a *recovery block*, whose
  commit must carry the precommits of every member of the new set (each its operator's decision).

Signed requests carry the height they were made at and expire `REQUEST_TTL` heights later; those a
validator signs also name the epoch of the set they were signed in, and count in no other; and every one
applied is recorded as consumed until it expires (`seats.py`), so none counts twice. Every node checks
every membership transaction when it applies a block, against its own state: a quorum that certified an
unapproved change only makes honest nodes refuse its next block, never changes their set.
"""
from __future__ import annotations

from typing import Callable

from exchange.chain.types.blocks import Header, Malformed, Vote
from exchange.chain.types.codec import pack
from exchange.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire

REQUEST_TTL = 200
ALIVE_RECENT = 64            # an `alive` names one of the last this many blocks
MAX_PROMOTE = 16
REMOVE_REASONS = ("absent", "equivocation", "approved")
APPROVE_ACTIONS = ("add", "remove")
Verify = Callable[[bytes, bytes, bytes], bool]
Sign = Callable[[bytes], bytes]


def _key(value: object) -> bool:
    return type(value) is bytes and len(value) == PUBLIC_KEY_BYTES


def _sig(value: object) -> bool:
    return type(value) is bytes and len(value) == SIGNATURE_BYTES


def _height(value: object) -> bool:
    return type(value) is int and 0 <= value < (1 << 62)


def _block_id(value: object) -> bool:
    return type(value) is bytes and len(value) == 32


def _signed(*fields: object) -> bytes:
    return pack(["exchange-node/membership/v3", *fields])


class MembershipTx:
    """One membership transaction. `key` is the node concerned (for `promote`, the first of `keys`)."""

    kind = ""
    key: bytes = b""
    at_height = 0
    changes_set = False

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        raise NotImplementedError

    def next_set(self, validators: ValidatorSet) -> ValidatorSet | None:
        """The set after this change (None: not a set change)."""
        return None

    @property
    def id(self) -> str:
        raise NotImplementedError

    def wire(self) -> Wire:
        raise NotImplementedError

    @staticmethod
    def from_wire(data: object) -> "MembershipTx":
        if type(data) is not list or not data or type(data[0]) is not str:
            raise Malformed("bad_membership")
        kind = _PARSERS.get(data[0])
        if kind is None:
            raise Malformed("bad_membership")
        return kind(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id[:40]})"


class Join(MembershipTx):
    """A node admitted to standby by a join token (`token`: its public key, granted in the log)."""

    kind = "join"
    __slots__ = ("key", "token", "at_height", "sig")

    def __init__(self, key: bytes, token: bytes, at_height: int, sig: bytes) -> None:
        self.key, self.token, self.at_height, self.sig = key, token, at_height, sig

    @staticmethod
    def signed_bytes(chain_id: str, key: bytes, token: bytes, at_height: int) -> bytes:
        return _signed(chain_id, "join", key, token, at_height)

    @classmethod
    def create(cls, chain_id: str, key: bytes, token: bytes, at_height: int, token_sign: Sign) -> "Join":
        return cls(key, token, at_height, token_sign(cls.signed_bytes(chain_id, key, token, at_height)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.token, self.sig, self.signed_bytes(chain_id, self.key, self.token, self.at_height))

    @property
    def id(self) -> str:
        return f"join:{self.key.hex()}:{self.token.hex()}:{self.at_height}"

    def wire(self) -> Wire:
        return ["join", self.key, self.token, self.at_height, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Join":
        if len(data) != 5 or not (_key(data[1]) and _key(data[2]) and _height(data[3]) and _sig(data[4])):
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4])


class Approve(MembershipTx):
    """A validator's vote that `key` gets a seat (`add`) or loses it (`remove`), in the set of `epoch`."""

    kind = "approve"
    __slots__ = ("action", "key", "approver", "epoch", "at_height", "sig")

    def __init__(self, action: str, key: bytes, approver: bytes, epoch: int, at_height: int, sig: bytes) -> None:
        self.action, self.key, self.approver, self.sig = action, key, approver, sig
        self.epoch, self.at_height = epoch, at_height

    @staticmethod
    def signed_bytes(chain_id: str, action: str, key: bytes, approver: bytes, epoch: int, at_height: int) -> bytes:
        return _signed(chain_id, "approve", action, key, approver, epoch, at_height)

    @classmethod
    def create(cls, chain_id: str, action: str, key: bytes, approver: bytes, epoch: int, at_height: int,
               sign: Sign) -> "Approve":
        return cls(action, key, approver, epoch, at_height,
                   sign(cls.signed_bytes(chain_id, action, key, approver, epoch, at_height)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.approver, self.sig, self.signed_bytes(chain_id, self.action, self.key, self.approver,
                                                                 self.epoch, self.at_height))

    @property
    def id(self) -> str:
        return f"approve:{self.action}:{self.key.hex()}:{self.approver.hex()}:{self.epoch}:{self.at_height}"

    def wire(self) -> Wire:
        return ["approve", self.action, self.key, self.approver, self.epoch, self.at_height, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Approve":
        if len(data) != 7 or data[1] not in APPROVE_ACTIONS or not (_key(data[2]) and _key(data[3])
                                                                   and _height(data[4]) and _height(data[5])
                                                                   and _sig(data[6])):
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4], data[5], data[6])


class Leave(MembershipTx):
    """A validator gives its seat back (a graceful stop), optionally to a standby it names; valid only in the
    set of `epoch` (an old leave re-sent after the leaver regained a seat counts for nothing)."""

    kind = "leave"
    changes_set = True
    __slots__ = ("key", "epoch", "at_height", "successor", "sig")

    def __init__(self, key: bytes, epoch: int, at_height: int, successor: bytes | None, sig: bytes) -> None:
        self.key, self.epoch, self.at_height, self.successor, self.sig = key, epoch, at_height, successor, sig

    @staticmethod
    def signed_bytes(chain_id: str, key: bytes, epoch: int, at_height: int, successor: bytes | None) -> bytes:
        return _signed(chain_id, "leave", key, epoch, at_height, successor)

    @classmethod
    def create(cls, chain_id: str, key: bytes, epoch: int, at_height: int, successor: bytes | None,
               sign: Sign) -> "Leave":
        return cls(key, epoch, at_height, successor, sign(cls.signed_bytes(chain_id, key, epoch, at_height, successor)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.key, self.sig, self.signed_bytes(chain_id, self.key, self.epoch, self.at_height,
                                                            self.successor))

    def next_set(self, validators: ValidatorSet) -> ValidatorSet | None:
        return validators.replaced(self.key, self.successor)

    @property
    def id(self) -> str:
        return f"leave:{self.key.hex()}:{self.epoch}:{self.at_height}"

    def wire(self) -> Wire:
        return ["leave", self.key, self.epoch, self.at_height, self.successor, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Leave":
        if len(data) != 6 or not (_key(data[1]) and _height(data[2]) and _height(data[3])
                                  and (data[4] is None or _key(data[4])) and _sig(data[5])) or data[4] == data[1]:
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4], data[5])


class Grant(MembershipTx):
    """A validator issues a join token: `token` (its public key) admits up to `uses` nodes to standby until
    block time `expires_ms`, while its issuer holds a seat."""

    kind = "grant"
    __slots__ = ("token", "issuer", "epoch", "uses", "expires_ms", "at_height", "sig")

    def __init__(self, token: bytes, issuer: bytes, epoch: int, uses: int, expires_ms: int, at_height: int,
                 sig: bytes) -> None:
        self.token, self.issuer, self.epoch, self.uses, self.expires_ms = token, issuer, epoch, uses, expires_ms
        self.at_height, self.sig = at_height, sig

    @property
    def key(self) -> bytes:        # type: ignore[override]
        return self.token

    @staticmethod
    def signed_bytes(chain_id: str, token: bytes, issuer: bytes, epoch: int, uses: int, expires_ms: int,
                     at_height: int) -> bytes:
        return _signed(chain_id, "grant", token, issuer, epoch, uses, expires_ms, at_height)

    @classmethod
    def create(cls, chain_id: str, token: bytes, issuer: bytes, epoch: int, uses: int, expires_ms: int,
               at_height: int, sign: Sign) -> "Grant":
        return cls(token, issuer, epoch, uses, expires_ms, at_height,
                   sign(cls.signed_bytes(chain_id, token, issuer, epoch, uses, expires_ms, at_height)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.issuer, self.sig, self.signed_bytes(chain_id, self.token, self.issuer, self.epoch,
                                                               self.uses, self.expires_ms, self.at_height))

    @property
    def id(self) -> str:
        return f"grant:{self.token.hex()}"

    def wire(self) -> Wire:
        return ["grant", self.token, self.issuer, self.epoch, self.uses, self.expires_ms, self.at_height, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Grant":
        if len(data) != 8 or not (_key(data[1]) and _key(data[2]) and _height(data[3]) and _height(data[4])
                                  and _height(data[5]) and _height(data[6]) and _sig(data[7])):
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4], data[5], data[6], data[7])


class Revoke(MembershipTx):
    """A validator revokes a join token: it admits nobody more, and the standbys it admitted leave the list."""

    kind = "revoke"
    __slots__ = ("token", "by", "epoch", "at_height", "sig")

    def __init__(self, token: bytes, by: bytes, epoch: int, at_height: int, sig: bytes) -> None:
        self.token, self.by, self.epoch, self.at_height, self.sig = token, by, epoch, at_height, sig

    @property
    def key(self) -> bytes:        # type: ignore[override]
        return self.token

    @staticmethod
    def signed_bytes(chain_id: str, token: bytes, by: bytes, epoch: int, at_height: int) -> bytes:
        return _signed(chain_id, "revoke", token, by, epoch, at_height)

    @classmethod
    def create(cls, chain_id: str, token: bytes, by: bytes, epoch: int, at_height: int, sign: Sign) -> "Revoke":
        return cls(token, by, epoch, at_height, sign(cls.signed_bytes(chain_id, token, by, epoch, at_height)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.by, self.sig, self.signed_bytes(chain_id, self.token, self.by, self.epoch, self.at_height))

    @property
    def id(self) -> str:
        return f"revoke:{self.token.hex()}:{self.by.hex()}:{self.epoch}:{self.at_height}"

    def wire(self) -> Wire:
        return ["revoke", self.token, self.by, self.epoch, self.at_height, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Revoke":
        if len(data) != 6 or not (_key(data[1]) and _key(data[2]) and _height(data[3]) and _height(data[4])
                                  and _sig(data[5])):
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4], data[5])


class Alive(MembershipTx):
    """A standby (or a validator that left gracefully, asking back) shows it is live and holds the chain: signed
    by its own key, naming the block `block_id` it holds at `at_height` (one of the last ALIVE_RECENT)."""

    kind = "alive"
    __slots__ = ("key", "at_height", "block_id", "sig")

    def __init__(self, key: bytes, at_height: int, block_id: bytes, sig: bytes) -> None:
        self.key, self.at_height, self.block_id, self.sig = key, at_height, block_id, sig

    @staticmethod
    def signed_bytes(chain_id: str, key: bytes, at_height: int, block_id: bytes) -> bytes:
        return _signed(chain_id, "alive", key, at_height, block_id)

    @classmethod
    def create(cls, chain_id: str, key: bytes, at_height: int, block_id: bytes, sign: Sign) -> "Alive":
        return cls(key, at_height, block_id, sign(cls.signed_bytes(chain_id, key, at_height, block_id)))

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.key, self.sig, self.signed_bytes(chain_id, self.key, self.at_height, self.block_id))

    @property
    def id(self) -> str:
        return f"alive:{self.key.hex()}:{self.at_height}"

    def wire(self) -> Wire:
        return ["alive", self.key, self.at_height, self.block_id, self.sig]

    @classmethod
    def parse(cls, data: Wire) -> "Alive":
        if len(data) != 5 or not (_key(data[1]) and _height(data[2]) and _block_id(data[3]) and _sig(data[4])):
            raise Malformed("bad_membership")
        return cls(data[1], data[2], data[3], data[4])


class Remove(MembershipTx):
    """A proposer removes a validator for a reason every node checks against its own state (absence,
    approvals) or against the evidence the transaction carries (two conflicting signed votes)."""

    kind = "remove"
    changes_set = True
    __slots__ = ("key", "reason", "evidence", "successor")

    def __init__(self, key: bytes, reason: str, evidence: tuple[Vote, Vote] | None = None,
                 successor: bytes | None = None) -> None:
        self.key, self.reason, self.evidence, self.successor = key, reason, evidence, successor

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        if self.reason == "equivocation":
            a, b = self.evidence or (None, None)
            return (a is not None and b is not None and a.validator == self.key == b.validator
                    and a.kind == b.kind and a.height == b.height and a.round == b.round
                    and a.block_id != b.block_id and a.valid(chain_id, verify) and b.valid(chain_id, verify))
        return self.evidence is None

    def next_set(self, validators: ValidatorSet) -> ValidatorSet | None:
        return validators.replaced(self.key, self.successor)

    @property
    def id(self) -> str:
        return f"remove:{self.key.hex()}:{self.reason}"

    def wire(self) -> Wire:
        evidence = None if self.evidence is None else [self.evidence[0].wire(), self.evidence[1].wire()]
        return ["remove", self.key, self.reason, evidence, self.successor]

    @classmethod
    def parse(cls, data: Wire) -> "Remove":
        if len(data) != 5 or not _key(data[1]) or data[2] not in REMOVE_REASONS \
                or not (data[4] is None or _key(data[4])) or data[4] == data[1]:
            raise Malformed("bad_membership")
        evidence = None
        if data[3] is not None:
            if type(data[3]) is not list or len(data[3]) != 2:
                raise Malformed("bad_membership")
            evidence = (Vote.from_wire(data[3][0]), Vote.from_wire(data[3][1]))
        return cls(data[1], data[2], evidence, data[4])


class Promote(MembershipTx):
    """Standbys take seats (a proposer's choice of live ones, to a size the seat rule allows)."""

    kind = "promote"
    changes_set = True
    __slots__ = ("keys",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys

    @property
    def key(self) -> bytes:        # type: ignore[override]
        return self.keys[0]

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return True

    def next_set(self, validators: ValidatorSet) -> ValidatorSet | None:
        return validators.with_added(*self.keys)

    @property
    def id(self) -> str:
        return "promote:" + ",".join(k.hex() for k in self.keys)

    def wire(self) -> Wire:
        return ["promote", list(self.keys)]

    @classmethod
    def parse(cls, data: Wire) -> "Promote":
        if len(data) != 2 or type(data[1]) is not list or not 1 <= len(data[1]) <= MAX_PROMOTE \
                or not all(_key(k) for k in data[1]) or len(set(data[1])) != len(data[1]):
            raise Malformed("bad_membership")
        return cls(tuple(data[1]))


class Recover(MembershipTx):
    """The way out of a permanent halt: the validators `keys` (a subset of the set that was to decide
    `height` + 1) take the chain on from the certified block `block_id` at `height`, as the whole new set.
    It carries no signature of its own: the recovery block holding it is certified by the precommits of
    every member of the new set (`recovery.py`), which is each operator's consent.

    `lock` is the highest-round precommit a kept validator signed at `height` + 1 for a block of the old set,
    with that block's header: the recovery block then carries that block's transactions and time, so if it
    was final on validators now gone, every fill of it is kept exactly."""

    kind = "recover"
    changes_set = True
    __slots__ = ("height", "block_id", "keys", "lock")

    def __init__(self, height: int, block_id: bytes, keys: tuple[bytes, ...],
                 lock: "tuple[Vote, Header] | None" = None) -> None:
        self.height, self.block_id, self.keys, self.lock = height, block_id, tuple(sorted(keys)), lock

    @property
    def key(self) -> bytes:        # type: ignore[override]
        return self.keys[0]

    @property
    def at_height(self) -> int:    # type: ignore[override]
        return self.height

    @property
    def carried_round(self) -> int:
        return -1 if self.lock is None else self.lock[0].round

    def signature_valid(self, chain_id: str, verify: Verify) -> bool:
        return self.lock is None or self.lock[0].valid(chain_id, verify)

    def next_set(self, validators: ValidatorSet) -> ValidatorSet:
        return ValidatorSet(validators.epoch + 1, self.keys)

    @property
    def id(self) -> str:
        return f"recover:{self.height}:{self.block_id.hex()}:{self.carried_round}:" + ",".join(k.hex() for k in self.keys)

    def wire(self) -> Wire:
        lock = None if self.lock is None else [self.lock[0].wire(), self.lock[1].wire()]
        return ["recover", self.height, self.block_id, list(self.keys), lock]

    @classmethod
    def parse(cls, data: Wire) -> "Recover":
        if len(data) != 5 or not _height(data[1]) or type(data[2]) is not bytes or len(data[2]) != 32 \
                or type(data[3]) is not list or not 1 <= len(data[3]) <= MAX_PROMOTE \
                or not all(_key(k) for k in data[3]) or data[3] != sorted(set(data[3])):
            raise Malformed("bad_membership")
        lock = None
        if data[4] is not None:
            if type(data[4]) is not list or len(data[4]) != 2:
                raise Malformed("bad_membership")
            lock = (Vote.from_wire(data[4][0]), Header.from_wire(data[4][1]))
        return cls(data[1], data[2], tuple(data[3]), lock)


_PARSERS: dict[str, Callable[[Wire], MembershipTx]] = {
    "join": Join.parse, "approve": Approve.parse, "leave": Leave.parse, "remove": Remove.parse,
    "promote": Promote.parse, "recover": Recover.parse, "grant": Grant.parse, "revoke": Revoke.parse,
    "alive": Alive.parse}

SIGNED_REQUESTS = (Join, Approve, Leave, Grant, Revoke, Alive)     # what travels between nodes; the rest a proposer makes
