"""Blocks, proposals, votes and commits (quorum certificates), with their canonical bytes.

A block is `[header, txs]`. The header names the chain, the height, the proposer's time, the
previous block, the application hash after the previous block (so a node whose state diverged
cannot vote for the next one), the validator set that orders it, a hash of the transactions and
the commit that finalised the previous block. The block id is the hash of the header.

A vote is one validator's signed PREVOTE or PRECOMMIT for (height, round, block id or nil); a
proposal is the round's proposer's signed (height, round, valid round, block id) plus the block.
A commit is the quorum certificate of a block: more than two thirds of the height's validators'
PRECOMMIT signatures for it, which any node verifies in O(validators) (Tendermint, Buchman, Kwon &
Milosevic 2018, Algorithm 1 line 49: a decision is a value with 2f+1 PRECOMMITs of one round).
Parsing here is strict and total: `from_wire` raises `Malformed` for anything off, never anything else.
"""
from __future__ import annotations

from typing import Callable, Protocol

from exchange.chain.types.codec import digest, pack
from exchange.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire

PREVOTE, PRECOMMIT = 1, 2
MAX_HEIGHT = (1 << 62)
MAX_ROUND = (1 << 20)
MAX_TIME_MS = (1 << 53) - 1
MAX_BLOCK_TXS = 20_000
HASH_BYTES = 32
NIL = None
GENESIS_PARENT = bytes(HASH_BYTES)

Verify = Callable[[bytes, bytes, bytes], bool]


class Malformed(ValueError):
    """A message or record with the wrong shape; `code` names what."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_BYTES


def _key(value: object) -> bool:
    return type(value) is bytes and len(value) == PUBLIC_KEY_BYTES


def _sig(value: object) -> bool:
    return type(value) is bytes and len(value) == SIGNATURE_BYTES


class Commit:
    """PRECOMMIT signatures of one (height, round, block id) by validators of that height's set."""

    __slots__ = ("height", "round", "block_id", "sigs")

    def __init__(self, height: int, round_: int, block_id: bytes, sigs: tuple[tuple[int, bytes], ...]) -> None:
        self.height, self.round, self.block_id, self.sigs = height, round_, block_id, sigs

    def signers(self, validators: ValidatorSet) -> list[bytes]:
        return [validators.keys[i] for i, _ in self.sigs if i < len(validators)]

    def verify(self, chain_id: str, validators: ValidatorSet, verify: Verify) -> bool:
        """At least a quorum of distinct validators of `validators` signed this precommit."""
        seen: set[int] = set()
        data = vote_bytes(chain_id, PRECOMMIT, self.height, self.round, self.block_id)
        for index, sig in self.sigs:
            if index in seen or index >= len(validators):
                return False
            if not verify(validators.keys[index], sig, data):
                return False
            seen.add(index)
        return len(seen) >= validators.quorum

    def wire(self) -> Wire:
        return [self.height, self.round, self.block_id, [[i, s] for i, s in self.sigs]]

    @classmethod
    def from_wire(cls, data: object) -> "Commit":
        if type(data) is not list or len(data) != 4:
            raise Malformed("bad_commit")
        height, round_, block_id, sigs = data
        if not (_int(height, 1, MAX_HEIGHT) and _int(round_, 0, MAX_ROUND) and _hash(block_id)
                and type(sigs) is list and 1 <= len(sigs) <= 1024):
            raise Malformed("bad_commit")
        parsed = []
        for item in sigs:
            if not (type(item) is list and len(item) == 2 and _int(item[0], 0, 1023) and _sig(item[1])):
                raise Malformed("bad_commit_sig")
            parsed.append((item[0], item[1]))
        if len({i for i, _ in parsed}) != len(parsed):
            raise Malformed("duplicate_commit_signer")
        return cls(height, round_, block_id, tuple(sorted(parsed)))

    def __repr__(self) -> str:
        return f"Commit(h={self.height} r={self.round} {self.block_id.hex()[:12]} sigs={len(self.sigs)})"


class Header:
    __slots__ = ("chain_id", "height", "time_ms", "prev_id", "proposer", "app_hash", "validators_hash",
                 "txs_hash", "last_commit", "id")

    def __init__(self, chain_id: str, height: int, time_ms: int, prev_id: bytes, proposer: bytes, app_hash: bytes,
                 validators_hash: bytes, txs_hash: bytes, last_commit: Commit | None) -> None:
        self.chain_id, self.height, self.time_ms, self.prev_id = chain_id, height, time_ms, prev_id
        self.proposer, self.app_hash, self.validators_hash, self.txs_hash = proposer, app_hash, validators_hash, txs_hash
        self.last_commit = last_commit
        self.id = digest("exchange-node/header/v1", self.wire())

    def wire(self) -> Wire:
        return [self.chain_id, self.height, self.time_ms, self.prev_id, self.proposer, self.app_hash,
                self.validators_hash, self.txs_hash, None if self.last_commit is None else self.last_commit.wire()]

    @classmethod
    def from_wire(cls, data: object) -> "Header":
        if type(data) is not list or len(data) != 9:
            raise Malformed("bad_header")
        chain_id, height, time_ms, prev_id, proposer, app_hash, vhash, thash, last = data
        if not (type(chain_id) is str and len(chain_id) == 64 and _int(height, 1, MAX_HEIGHT)
                and _int(time_ms, 0, MAX_TIME_MS) and _hash(prev_id) and _key(proposer) and _hash(app_hash)
                and _hash(vhash) and _hash(thash)):
            raise Malformed("bad_header")
        return cls(chain_id, height, time_ms, prev_id, proposer, app_hash, vhash, thash,
                   None if last is None else Commit.from_wire(last))


class Block:
    """A header and its transactions (each a wire item: `["a", signed tx]` or `["m", membership tx]`)."""

    __slots__ = ("header", "txs", "_size")

    def __init__(self, header: Header, txs: list[Wire]) -> None:
        self.header = header
        self.txs = txs
        self._size = -1

    @property
    def id(self) -> bytes:
        return self.header.id

    @property
    def height(self) -> int:
        return self.header.height

    @staticmethod
    def txs_hash(txs: list[Wire]) -> bytes:
        return digest("exchange-node/txs/v1", txs)

    def wire(self) -> Wire:
        return [self.header.wire(), self.txs]

    @property
    def size(self) -> int:
        if self._size < 0:
            self._size = len(pack(self.wire()))
        return self._size

    @classmethod
    def from_wire(cls, data: object) -> "Block":
        """Shape checks and the header/txs binding; transaction contents are judged by the caller."""
        if type(data) is not list or len(data) != 2 or type(data[1]) is not list or len(data[1]) > MAX_BLOCK_TXS:
            raise Malformed("bad_block")
        header = Header.from_wire(data[0])
        if cls.txs_hash(data[1]) != header.txs_hash:
            raise Malformed("txs_hash_mismatch")
        return cls(header, data[1])

    def __repr__(self) -> str:
        return f"Block(h={self.height} {self.id.hex()[:12]} txs={len(self.txs)})"


def vote_bytes(chain_id: str, kind: int, height: int, round_: int, block_id: bytes | None) -> bytes:
    return pack(["exchange-node/vote/v1", chain_id, kind, height, round_, block_id])


def proposal_bytes(chain_id: str, height: int, round_: int, valid_round: int, block_id: bytes) -> bytes:
    return pack(["exchange-node/proposal/v1", chain_id, height, round_, valid_round, block_id])


class Vote:
    __slots__ = ("kind", "height", "round", "block_id", "validator", "sig")

    def __init__(self, kind: int, height: int, round_: int, block_id: bytes | None, validator: bytes, sig: bytes) -> None:
        self.kind, self.height, self.round, self.block_id, self.validator, self.sig = \
            kind, height, round_, block_id, validator, sig

    @classmethod
    def create(cls, chain_id: str, kind: int, height: int, round_: int, block_id: bytes | None, validator: bytes,
               sign: Callable[[bytes], bytes]) -> "Vote":
        return cls(kind, height, round_, block_id, validator, sign(vote_bytes(chain_id, kind, height, round_, block_id)))

    def valid(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.validator, self.sig, vote_bytes(chain_id, self.kind, self.height, self.round, self.block_id))

    def wire(self) -> Wire:
        return [self.kind, self.height, self.round, self.block_id, self.validator, self.sig]

    @classmethod
    def from_wire(cls, data: object) -> "Vote":
        if type(data) is not list or len(data) != 6:
            raise Malformed("bad_vote")
        kind, height, round_, block_id, validator, sig = data
        if not (kind in (PREVOTE, PRECOMMIT) and _int(height, 1, MAX_HEIGHT) and _int(round_, 0, MAX_ROUND)
                and (block_id is None or _hash(block_id)) and _key(validator) and _sig(sig)):
            raise Malformed("bad_vote")
        return cls(kind, height, round_, block_id, validator, sig)

    def __repr__(self) -> str:
        name = "prevote" if self.kind == PREVOTE else "precommit"
        target = "nil" if self.block_id is None else self.block_id.hex()[:12]
        return f"Vote({name} h={self.height} r={self.round} {target} by {self.validator.hex()[:8]})"


class Proposal:
    __slots__ = ("height", "round", "valid_round", "block", "proposer", "sig")

    def __init__(self, height: int, round_: int, valid_round: int, block: Block, proposer: bytes, sig: bytes) -> None:
        self.height, self.round, self.valid_round, self.block, self.proposer, self.sig = \
            height, round_, valid_round, block, proposer, sig

    @classmethod
    def create(cls, chain_id: str, height: int, round_: int, valid_round: int, block: Block, proposer: bytes,
               sign: Callable[[bytes], bytes]) -> "Proposal":
        return cls(height, round_, valid_round, block, proposer,
                   sign(proposal_bytes(chain_id, height, round_, valid_round, block.id)))

    def valid_signature(self, chain_id: str, verify: Verify) -> bool:
        return verify(self.proposer, self.sig,
                      proposal_bytes(chain_id, self.height, self.round, self.valid_round, self.block.id))

    def wire(self) -> Wire:
        return [self.height, self.round, self.valid_round, self.block.wire(), self.proposer, self.sig]

    @classmethod
    def from_wire(cls, data: object) -> "Proposal":
        if type(data) is not list or len(data) != 6:
            raise Malformed("bad_proposal")
        height, round_, valid_round, block, proposer, sig = data
        if not (_int(height, 1, MAX_HEIGHT) and _int(round_, 0, MAX_ROUND) and _int(valid_round, -1, MAX_ROUND)
                and valid_round < round_ and _key(proposer) and _sig(sig)):
            raise Malformed("bad_proposal")
        parsed = Block.from_wire(block)
        if parsed.height != height:
            raise Malformed("bad_proposal")
        return cls(height, round_, valid_round, parsed, proposer, sig)

    def __repr__(self) -> str:
        return f"Proposal(h={self.height} r={self.round} vr={self.valid_round} {self.block.id.hex()[:12]})"


class BlockSource(Protocol):
    """Committed blocks this node can serve to peers that are catching up."""

    def get(self, height: int) -> tuple[Block, Commit] | None: ...
