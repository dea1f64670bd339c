"""Checking a node's certified headers instead of believing it: the light client's rules, with no I/O.

A header counts when the validator set that decided its height signed it with a quorum. That set is proven,
never taken from the node: the genesis (whose hash is the chain id the client trusts) gives the first set, and each
epoch proof (the certified block of a set change) is checked against the set before it (`replay_epochs`). A node
that leaves proofs out can only make the client believe an older set, and a header of a later epoch then fails
(it names a set nobody proved). A node that serves an old header as the latest is caught by its age: a chain
decides a block a second even when idle, so a latest header older than `max_age_ms` is stale.

Two nodes whose verified headers differ at one height prove a fork by a quorum of keys: `Conflict` carries both
headers and commits, the evidence.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from exchange.chain.types.blocks import Block, Commit, Header, Malformed
from exchange.chain.types.codec import unpack
from exchange.chain.sync.epochs import BadProof, replay_epochs, set_at
from exchange.chain.types.genesis import Genesis
from exchange.chain.types.validators import ValidatorSet
from exchange.crypto import verify as ed25519_verify

DEFAULT_MAX_AGE_MS = 30_000


class Refused(Exception):
    """What one node served cannot be verified; `reason` is a stable code, the message says what was wrong. The
    message may quote the node's own words (its error answer), so it is kept printable and short: a node's control
    characters would otherwise reach the user's terminal or log as they came (a line of its own, 'verified')."""

    def __init__(self, node: str, reason: str, message: str) -> None:
        message, reason = shown(message), shown(reason[:64])      # a reason may be a node's error code
        super().__init__(f"{node}: {message}")
        self.node, self.reason, self.message = node, reason, message


MAX_SHOWN = 500         # characters of a refusal's message


def shown(text: str) -> str:
    """`text` with every character that is not printable escaped (`\\n`, `\\x1b`), at most MAX_SHOWN of it."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:MAX_SHOWN])
    return escaped if len(text) <= MAX_SHOWN else escaped + f"... ({len(text) - MAX_SHOWN} more characters)"


class Conflict(Exception):
    """Two nodes serve different headers, each with a valid quorum certificate, for one height: evidence of a
    fork by a quorum of validator keys. The client stops."""

    def __init__(self, height: int, a: "VerifiedHeader", b: "VerifiedHeader") -> None:
        super().__init__(f"conflicting certified headers at height {height}: {a.node} serves {a.block_id[:16]}, "
                         f"{b.node} serves {b.block_id[:16]}; both carry a quorum of signatures (a fork: the keys of "
                         f"a quorum signed twice)")
        self.height, self.a, self.b = height, a, b


@dataclass(frozen=True)
class Proven:
    """A node's chain as far as its genesis and epoch proofs go: who decides which height."""

    genesis: Genesis
    sets: tuple[tuple[int, ValidatorSet], ...]

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id


@dataclass(frozen=True)
class VerifiedHeader:
    node: str
    height: int
    time_ms: int
    block_id: str
    app_hash: str
    epoch: int
    signers: int
    validators: int
    header: bytes               # the canonical bytes, kept as evidence
    commit: bytes

    def as_json(self) -> dict[str, object]:
        return {"node": self.node, "height": self.height, "time_ms": self.time_ms, "block_id": self.block_id,
                "app_hash": self.app_hash, "epoch": self.epoch, "signatures_checked": self.signers,
                "validators": self.validators, "verified": True}


def fingerprint(chain_id: str) -> str:
    """The chain id's first 16 hex digits in groups of four, as people compare it."""
    return " ".join(chain_id[i:i + 4] for i in range(0, 16, 4))


def _bytes(node: str, field: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise Refused(node, "malformed", f"its {field} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(node, "malformed", f"its {field} is not base64") from None


def _unpacked(node: str, field: str, text: object) -> object:
    try:
        return unpack(_bytes(node, field, text), max_bytes=8 * 1024 * 1024)
    except ValueError:
        raise Refused(node, "malformed", f"its {field} is not msgpack") from None


def proven(node: str, trusted_chain_id: str | None, genesis_answer: object, epochs_answer: object) -> Proven:
    """The genesis (matching the trusted chain id when there is one) and the sets its epoch proofs prove."""
    if not isinstance(genesis_answer, dict) or not isinstance(epochs_answer, dict):
        raise Refused(node, "malformed", "its genesis or epoch answer is not a JSON object")
    try:
        genesis = Genesis.from_wire(_unpacked(node, "genesis", genesis_answer.get("genesis")))
    except (ValueError, TypeError):
        raise Refused(node, "malformed", "its genesis document does not decode") from None
    if trusted_chain_id is not None and genesis.chain_id != trusted_chain_id:
        raise Refused(node, "other_chain", f"it serves chain {fingerprint(genesis.chain_id)}, not the trusted "
                                           f"{fingerprint(trusted_chain_id)}")
    items = epochs_answer.get("proofs")
    if not isinstance(items, list):
        raise Refused(node, "malformed", "its epoch proofs are not a list")
    proofs = []
    for n, item in enumerate(items):
        wire = _unpacked(node, f"epoch proof {n}", item)
        try:
            if not isinstance(wire, list) or len(wire) != 2:
                raise Malformed("bad_proof")
            proofs.append((Block.from_wire(wire[0]), Commit.from_wire(wire[1])))
        except Malformed as exc:
            raise Refused(node, "malformed", f"its epoch proof {n} does not decode ({exc})") from None
    try:
        sets = replay_epochs(genesis, proofs, ed25519_verify)
    except BadProof as exc:
        raise Refused(node, "bad_epoch_proof", f"its epoch proofs do not verify: {exc}") from None
    return Proven(genesis, tuple(sets))


def verified_header(node: str, chain: Proven, answer: object, *, now_ms: int | None = None,
                    max_age_ms: int = DEFAULT_MAX_AGE_MS) -> VerifiedHeader:
    """The header and commit in `answer`, checked: its set proven, a quorum of that set's valid signatures over
    exactly this header, and (for a latest header, `now_ms` given) no older than `max_age_ms`."""
    if not isinstance(answer, dict):
        raise Refused(node, "malformed", "its header answer is not a JSON object")
    header_bytes, commit_bytes = _bytes(node, "header", answer.get("header")), _bytes(node, "commit", answer.get("commit"))
    try:
        header = Header.from_wire(unpack(header_bytes))
        commit = Commit.from_wire(unpack(commit_bytes))
    except (Malformed, ValueError) as exc:
        raise Refused(node, "malformed", f"its header or commit does not decode ({exc})") from None
    if header.chain_id != chain.chain_id:
        raise Refused(node, "other_chain", f"its header is of chain {fingerprint(header.chain_id)}")
    if commit.height != header.height or commit.block_id != header.id:
        raise Refused(node, "commit_mismatch", f"the commit it serves is for another block than its header at "
                                               f"height {header.height}")
    validators = set_at(list(chain.sets), header.height)
    if header.validators_hash != validators.hash:
        raise Refused(node, "unproven_set", f"its header at height {header.height} names a validator set that no "
                                            f"certified change proves (the proven set is epoch {validators.epoch})")
    if not commit.verify(chain.chain_id, validators, ed25519_verify):
        raise Refused(node, "bad_certificate", f"its header at height {header.height} lacks a quorum of valid "
                                               f"signatures ({len(commit.sigs)} given, {validators.quorum} of "
                                               f"{len(validators)} needed, each checked)")
    if now_ms is not None and now_ms - header.time_ms > max_age_ms:
        raise Refused(node, "stale", f"its latest header (height {header.height}) is {(now_ms - header.time_ms) / 1000:.0f} s "
                                     f"old: a live chain decides a block a second")
    return VerifiedHeader(node, header.height, header.time_ms, header.id.hex(), header.app_hash.hex(),
                          validators.epoch, len(commit.sigs), len(validators), header_bytes, commit_bytes)


def compare(a: VerifiedHeader, b: VerifiedHeader) -> None:
    """Raise Conflict when two verified headers of one height differ."""
    if a.height == b.height and a.block_id != b.block_id:
        raise Conflict(a.height, a, b)
