"""Seats: who may hold a validator seat, and the rules every node applies to membership transactions.

Part of the replicated state (it is in every snapshot and in the state hash): the standby list (nodes
approved for a seat, waiting for one: admitted by join token, approved by the validators, or jailed
for absence with their approval standing), the approvals gathered so far, the removals the validators
approved, and the keys banned for equivocation. `problem` says why a membership transaction cannot
apply now (the same function judges a proposal and a certified block), `apply` carries it out and
returns the next validator set when it changes one. No I/O, no clock but the block's.
"""
from __future__ import annotations

from typing import Callable

from exchange.chain.codec import digest
from exchange.chain.genesis import Genesis
from exchange.chain.membership import REQUEST_TTL, Approve, Join, Leave, MembershipTx, Promote, Recover, Remove
from exchange.chain.validators import ValidatorSet
from exchange.wire import Wire

MAX_STANDBY = 64              # approved nodes waiting for a seat
MAX_PENDING_PER_APPROVER = 8  # targets one validator may have open approvals for


class Seats:
    __slots__ = ("standby", "approvals", "removals", "banned")

    def __init__(self) -> None:
        self.standby: dict[bytes, int] = {}                       # key -> height it was approved at
        self.approvals: dict[tuple[str, bytes], dict[bytes, int]] = {}   # (action, target) -> approver -> height
        self.removals: set[bytes] = set()                         # validators the set approved to remove
        self.banned: set[bytes] = set()                           # equivocated: never again

    def copy(self) -> "Seats":
        other = Seats()
        other.standby = dict(self.standby)
        other.approvals = {k: dict(v) for k, v in self.approvals.items()}
        other.removals = set(self.removals)
        other.banned = set(self.banned)
        return other

    # ------------------------------------------------------------------ rules
    def problem(self, tx: MembershipTx, validators: ValidatorSet, genesis: Genesis, height: int,
                absent: Callable[[bytes], bool], last_block_id: bytes | None = None) -> str | None:
        """Why `tx` cannot apply at `height` on top of `validators` (`last_block_id`: the block at height - 1),
        or None. Signatures are checked by the caller (`MembershipTx.signature_valid`; a recovery's are its
        block's commit)."""
        if genesis.pinned:
            return "pinned"
        if isinstance(tx, Recover):
            return recovery_problem(tx, validators, height, last_block_id)
        if isinstance(tx, (Join, Approve, Leave)) and not tx.at_height <= height <= tx.at_height + REQUEST_TTL:
            return "expired"
        if isinstance(tx, Join):
            return self._candidate_problem(tx.key, validators)
        if isinstance(tx, Approve):
            return self._approve_problem(tx, validators)
        if isinstance(tx, Promote):
            if any(key not in self.standby for key in tx.keys):
                return "not_standby"
            if not genesis.size_allowed(len(validators) + len(tx.keys)):
                return "size_not_allowed"
            return None
        if isinstance(tx, (Leave, Remove)):
            if tx.key not in validators:
                return "not_validator"
            if tx.successor is not None and tx.successor not in self.standby:
                return "successor_not_standby"
            if len(validators) <= 1 and tx.successor is None:
                return "last_validator"
            if isinstance(tx, Remove):
                if tx.reason == "absent" and not absent(tx.key):
                    return "not_absent"
                if tx.reason == "approved" and tx.key not in self.removals:
                    return "not_approved"
            return None
        return "unknown_kind"

    def _candidate_problem(self, key: bytes, validators: ValidatorSet) -> str | None:
        if key in validators:
            return "already_validator"
        if key in self.standby:
            return "already_standby"
        if key in self.banned:
            return "banned"
        if len(self.standby) >= MAX_STANDBY:
            return "standby_full"
        return None

    def _approve_problem(self, tx: Approve, validators: ValidatorSet) -> str | None:
        if tx.approver not in validators:
            return "approver_not_validator"
        voters = self.approvals.get((tx.action, tx.key), {})
        if tx.approver in voters:
            return "already_approved"
        if tx.action == "add":
            why = self._candidate_problem(tx.key, validators)
            if why is not None:
                return why
        elif tx.key not in validators and tx.key not in self.standby:
            return "not_validator"
        elif tx.key in self.removals:
            return "already_approved"
        open_ = sum(1 for approvers in self.approvals.values() if tx.approver in approvers)
        if open_ >= MAX_PENDING_PER_APPROVER:
            return "too_many_pending_approvals"
        return None

    def apply(self, tx: MembershipTx, validators: ValidatorSet, height: int) -> ValidatorSet | None:
        """Carry out a transaction `problem` accepted; the next validator set if it changes one."""
        if isinstance(tx, Join):
            self.standby[tx.key] = height
            return None
        if isinstance(tx, Approve):
            target = (tx.action, tx.key)
            voters = self.approvals.setdefault(target, {})
            voters[tx.approver] = height
            if sum(1 for key in voters if key in validators) >= validators.quorum:
                del self.approvals[target]
                if tx.action == "add":
                    self.standby[tx.key] = height
                elif tx.key in validators:
                    self.removals.add(tx.key)
                else:
                    self.standby.pop(tx.key, None)
            return None
        after = tx.next_set(validators)
        assert after is not None
        if isinstance(tx, Recover):     # the validators gone for good lose their seat and any approval
            for key in validators.keys:
                if key not in after:
                    self._forget(key)
            return after
        if isinstance(tx, Promote):
            for key in tx.keys:
                del self.standby[key]
            return after
        assert isinstance(tx, (Leave, Remove))
        if tx.successor is not None:
            del self.standby[tx.successor]
        self.removals.discard(tx.key)
        if isinstance(tx, Remove) and tx.reason == "equivocation":
            self.banned.add(tx.key)
            self._forget(tx.key)
        elif isinstance(tx, Remove) and tx.reason == "approved":
            self._forget(tx.key)
        else:       # left or jailed: its approval stands, so it may have a seat again when it is back
            self.standby[tx.key] = height
        return after

    def _forget(self, key: bytes) -> None:
        self.standby.pop(key, None)
        for target in [t for t in self.approvals if t[1] == key]:
            del self.approvals[target]

    def after_change(self, validators: ValidatorSet) -> None:
        """The set changed: approvals by those who left it no longer count, and are dropped."""
        for target, voters in list(self.approvals.items()):
            kept = {k: h for k, h in voters.items() if k in validators}
            if kept:
                self.approvals[target] = kept
            else:
                del self.approvals[target]
        self.removals &= set(validators.keys)

    # ------------------------------------------------------------------ views and snapshots
    def wire(self) -> Wire:
        return [sorted([k, h] for k, h in self.standby.items()),
                sorted([a, t, sorted([k, h] for k, h in v.items())] for (a, t), v in self.approvals.items()),
                sorted(self.removals), sorted(self.banned)]

    @classmethod
    def from_wire(cls, data: Wire) -> "Seats":
        """From a snapshot's part (its hash already checked); a wrong shape raises TypeError or ValueError."""
        seats = cls()
        standby, approvals, removals, banned = data
        seats.standby = {bytes(k): int(h) for k, h in standby}
        seats.approvals = {(str(a), bytes(t)): {bytes(k): int(h) for k, h in v} for a, t, v in approvals}
        seats.removals = {bytes(k) for k in removals}
        seats.banned = {bytes(k) for k in banned}
        return seats

    def hash(self) -> bytes:
        return digest("exchange-node/seats/v1", self.wire())

    def standby_order(self) -> list[bytes]:
        """Standbys, longest waiting first (then by key, so every node orders them alike)."""
        return sorted(self.standby, key=lambda k: (self.standby[k], k))


def recovery_problem(tx: Recover, validators: ValidatorSet, height: int, last_block_id: bytes | None) -> str | None:
    """Why a recovery cannot take effect at `height` on top of `validators` (the set that was to decide it),
    or None. It names the last certified block, keeps only validators of that set, removes at least one, and
    keeps more than the set's tolerated faults (f + 1): then at least one honest validator's operator agreed,
    and every quorum that could have certified a block at `height` shares a validator with the new set."""
    if tx.height != height - 1:
        return "wrong_height"
    if last_block_id is None or tx.block_id != last_block_id:
        return "not_our_block"
    if any(key not in validators for key in tx.keys):
        return "not_validator"
    if len(tx.keys) >= len(validators):
        return "removes_nobody"
    if len(tx.keys) < validators.faults + 1:
        return "too_few_kept"
    return None
