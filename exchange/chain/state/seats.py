"""Seats: who may hold a validator seat, and the rules every node applies to membership transactions.

Part of the replicated state (it is in every snapshot and in the state hash): the standby list (nodes
approved for a seat, waiting for one: admitted by a join token, approved by the validators, jailed for
absence, or back after a graceful leave), the join tokens the validators issued, the approvals gathered so
far, the removals the validators approved, the keys removed (they come back only by approval) or banned
for equivocation, the validators that left gracefully (they may ask back), the signed requests already
consumed (each counts once), and the ids of the last blocks (what an `alive` must name). `problem` says why
a membership transaction cannot apply now (the same function judges a proposal and a certified block),
`apply` carries it out and returns the next validator set when it changes one, `end_block` expires what
block time has passed. No I/O, no clock but the block's.

Who may be promoted or succeed a leaver is decided by this record alone: a standby whose `alive`, naming a
block it holds, was ordered within LIVE_WITHIN_MS of block time. Nobody's own claim of its height counts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

from exchange.chain.types.codec import digest
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.membership import (ALIVE_RECENT, REQUEST_TTL, Alive, Approve, Grant, Join, Leave, MembershipTx,
                                       Promote, Recover, Remove, Revoke)
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire

MAX_STANDBY = 64                  # nodes waiting for a seat
MAX_TOKEN_STANDBY = 32            # of them, admitted by a join token (the rest are kept for approvals)
MAX_TOKEN_STANDBY_PER_ISSUER = 8  # admitted by the tokens of one validator
MAX_PENDING_PER_APPROVER = 8      # targets one validator may have open approvals for
MAX_TOKEN_USES = 16               # nodes one token may admit
MAX_TOKENS_PER_ISSUER = 8         # live tokens one validator may have issued
MAX_TOKEN_TTL_MS = 7 * 86_400_000
LIVE_WITHIN_MS = 30_000           # a standby whose last `alive` is older may not take a seat
ALIVE_MIN_GAP_MS = 2_000          # one `alive` per standby per this much block time is ordered
SILENT_EXPIRE_MS = 120_000        # a standby silent (or never alive) this long leaves the list
JAILED_EXPIRE_MS = 86_400_000     # a validator jailed for absence keeps its approval this long
MAX_REMEMBERED = 1024             # removed and departed keys remembered (oldest forgotten first)
TOKEN_KEPT_MS = 3_600_000         # an expired token stays on record this long (a late holder is told why) ...
MAX_TOKEN_RECORDS_PER_ISSUER = 32  # ... within this many records per issuer (its oldest spent ones go first)
APPROVAL_KEPT_MS = 86_400_000     # an approval still short of a quorum is dropped after this much block time
PROBATION_BLOCKS = 15             # a validator seated by promotion or succession that signs nothing for this
PROBATION_MS = 15_000             # many blocks and this much block time after it is removed (not jailed)

VIA = ("token", "approved", "jailed", "returned")


@dataclass(slots=True)
class Standby:
    height: int          # when it joined the list (the list's order: longest waiting first)
    since_ms: int        # block time it joined the list
    via: str             # one of VIA
    token: bytes         # the join token that admitted it (b"" otherwise)
    alive_ms: int        # block time of its last ordered `alive` (0: none yet)
    issuer: bytes = b""  # the validator whose token admitted it (its quota counts it, whatever became of the token)

    def wire(self) -> Wire:
        return [self.height, self.since_ms, self.via, self.token, self.alive_ms, self.issuer]


@dataclass(slots=True)
class Token:
    issuer: bytes
    uses_left: int
    expires_ms: int
    revoked: bool
    height: int          # when it was granted

    def wire(self) -> Wire:
        return [self.issuer, self.uses_left, self.expires_ms, self.revoked, self.height]


def consumed_key(tx: MembershipTx) -> bytes:
    return digest("exchange-node/consumed/v1", tx.id)[:16]


class Seats:
    __slots__ = ("standby", "approvals", "removals", "banned", "tokens", "removed", "departed", "consumed",
                 "recent_blocks", "probation")

    def __init__(self) -> None:
        self.standby: dict[bytes, Standby] = {}
        self.approvals: dict[tuple[str, bytes], dict[bytes, int]] = {}   # (action, target) -> approver -> block ms
        self.removals: set[bytes] = set()                         # validators the set approved to remove
        self.banned: set[bytes] = set()                           # equivocated: never again
        self.tokens: dict[bytes, Token] = {}                      # join token key -> its grant, until it expires
        self.removed: dict[bytes, int] = {}                       # removed by approval: back only by approval
        self.departed: dict[bytes, int] = {}                      # left gracefully: may ask back with `alive`
        self.consumed: dict[bytes, int] = {}                      # applied request -> height its TTL ends
        self.recent_blocks: dict[int, bytes] = {}                 # the last ALIVE_RECENT blocks' ids
        self.probation: dict[bytes, tuple[int, int]] = {}         # seated, not yet seen signing -> (height, ms)

    def copy(self) -> "Seats":
        other = Seats()
        other.standby = {k: replace(v) for k, v in self.standby.items()}
        other.approvals = {k: dict(v) for k, v in self.approvals.items()}
        other.removals = set(self.removals)
        other.banned = set(self.banned)
        other.tokens = {k: replace(v) for k, v in self.tokens.items()}
        other.removed = dict(self.removed)
        other.departed = dict(self.departed)
        other.consumed = dict(self.consumed)
        other.recent_blocks = dict(self.recent_blocks)
        other.probation = dict(self.probation)
        return other

    # ------------------------------------------------------------------ what the record says
    def is_live(self, key: bytes, time_ms: int) -> bool:
        """A standby the validators saw live and caught up lately (its ordered `alive`), never by its own claim."""
        entry = self.standby.get(key)
        return entry is not None and entry.alive_ms > 0 and time_ms - entry.alive_ms <= LIVE_WITHIN_MS

    def live_standbys(self, time_ms: int) -> list[bytes]:
        return [key for key in self.standby_order() if self.is_live(key, time_ms)]

    def token_usable(self, token: bytes, validators: ValidatorSet, time_ms: int) -> str | None:
        """Why join token `token` admits nobody now, or None."""
        grant = self.tokens.get(token)
        if grant is None:
            return "unknown_token"
        if grant.revoked:
            return "token_revoked"
        if grant.expires_ms < time_ms:
            return "token_expired"
        if grant.uses_left <= 0:
            return "token_used_up"
        if grant.issuer not in validators:
            return "token_issuer_gone"
        return None

    def successor_safe(self, validators: ValidatorSet, leaving: bytes, successor: bytes) -> bool:
        """Whether `successor` may take `leaving`'s seat: the set after it keeps a quorum of members seen signing
        (not on probation) without counting the successor. A standby shows it holds the chain, not that it will
        vote: two stops handing seats to two that never vote would otherwise halt a set of four."""
        if len(validators) <= 1:
            return True     # the only validator's seat: a successor, or nobody left to finalise
        after = validators.replaced(leaving, successor)
        proven = sum(1 for key in after.keys if key != successor and key not in self.probation)
        return proven >= after.quorum

    def leave_safe(self, validators: ValidatorSet, leaving: bytes) -> bool:
        """Whether the set without `leaving` keeps a quorum of members seen signing: if not, a member seated lately
        that never votes would halt it, and with no blocks nobody could remove that member."""
        if len(validators) <= 1:
            return True
        after = validators.replaced(leaving, None)
        return sum(1 for key in after.keys if key not in self.probation) >= after.quorum

    def probation_failed(self, key: bytes, height: int, time_ms: int) -> bool:
        """A member seated by promotion or succession that has signed nothing since, for PROBATION_BLOCKS blocks and
        PROBATION_MS of block time."""
        seated = self.probation.get(key)
        return seated is not None and height - seated[0] > PROBATION_BLOCKS and time_ms - seated[1] >= PROBATION_MS

    def signed(self, keys: Iterable[bytes]) -> None:
        """Members seen signing (a commit's signers, a block's proposer): off probation."""
        for key in keys:
            self.probation.pop(key, None)

    # ------------------------------------------------------------------ rules
    def problem(self, tx: MembershipTx, validators: ValidatorSet, genesis: Genesis, height: int, time_ms: int,
                absent: Callable[[bytes], bool], last_block_id: bytes | None = None) -> str | None:
        """Why `tx` cannot apply at `height` (block time `time_ms`) on top of `validators` (`last_block_id`: the
        block at height - 1), or None. Signatures are checked by the caller (`MembershipTx.signature_valid`; a
        recovery's are its block's commit)."""
        if genesis.pinned:
            return "pinned"
        if isinstance(tx, Recover):
            return recovery_problem(tx, validators, height, last_block_id)
        if isinstance(tx, Alive):
            if not tx.at_height < height <= tx.at_height + ALIVE_RECENT:
                return "expired"
        elif isinstance(tx, (Join, Approve, Leave, Grant, Revoke)) \
                and not tx.at_height <= height <= tx.at_height + REQUEST_TTL:
            return "expired"
        if isinstance(tx, (Join, Approve, Leave, Grant, Revoke, Alive)) and consumed_key(tx) in self.consumed:
            return "replayed"
        if isinstance(tx, (Approve, Leave, Grant, Revoke)) and tx.epoch != validators.epoch:
            return "wrong_epoch"
        if isinstance(tx, Join):
            return self._join_problem(tx, validators, time_ms)
        if isinstance(tx, Approve):
            return self._approve_problem(tx, validators)
        if isinstance(tx, Grant):
            return self._grant_problem(tx, validators, time_ms)
        if isinstance(tx, Revoke):
            if tx.by not in validators:
                return "not_validator"
            grant = self.tokens.get(tx.token)
            if grant is None:
                return "unknown_token"
            return "token_revoked" if grant.revoked else None
        if isinstance(tx, Alive):
            return self._alive_problem(tx, validators, time_ms)
        if isinstance(tx, Promote):
            if any(key not in self.standby for key in tx.keys):
                return "not_standby"
            if not all(self.is_live(key, time_ms) for key in tx.keys):
                return "not_live"
            if not genesis.size_allowed(len(validators) + len(tx.keys)):
                return "size_not_allowed"
            return None
        if isinstance(tx, (Leave, Remove)):
            if tx.key not in validators:
                return "not_validator"
            if tx.successor is not None:
                if tx.successor not in self.standby:
                    return "successor_not_standby"
                if not self.is_live(tx.successor, time_ms):
                    return "successor_not_live"
                if not self.successor_safe(validators, tx.key, tx.successor):
                    return "successor_unproven"
            if len(validators) <= 1 and tx.successor is None:
                return "last_validator"
            if isinstance(tx, Remove):
                if tx.reason == "absent" and not (absent(tx.key) or self.probation_failed(tx.key, height, time_ms)):
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
        return None

    def _join_problem(self, tx: Join, validators: ValidatorSet, time_ms: int) -> str | None:
        why = self._candidate_problem(tx.key, validators) or self.token_usable(tx.token, validators, time_ms)
        if why is not None:
            return why
        if tx.key in self.removed:
            return "removed"        # the validators removed it: only their approval brings it back
        by_token = [entry for entry in self.standby.values() if entry.via == "token"]
        issuer = self.tokens[tx.token].issuer
        if sum(1 for entry in by_token if entry.issuer == issuer) >= MAX_TOKEN_STANDBY_PER_ISSUER:
            return "issuer_standby_quota"
        if len(by_token) >= MAX_TOKEN_STANDBY:
            return "token_standby_full"
        if len(self.standby) >= MAX_STANDBY:
            return "standby_full"       # only a node the validators approved displaces another
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
        elif tx.key not in validators and tx.key not in self.standby and tx.key not in self.departed:
            return "not_validator"      # a validator that left may be kept out while it is away
        elif tx.key in self.removals:
            return "already_approved"
        open_ = sum(1 for approvers in self.approvals.values() if tx.approver in approvers)
        if open_ >= MAX_PENDING_PER_APPROVER:
            return "too_many_pending_approvals"
        return None

    def _grant_problem(self, tx: Grant, validators: ValidatorSet, time_ms: int) -> str | None:
        if tx.issuer not in validators:
            return "not_validator"
        if tx.token in self.tokens:
            return "token_exists"
        if not 1 <= tx.uses <= MAX_TOKEN_USES:
            return "bad_uses"
        if not time_ms < tx.expires_ms <= time_ms + MAX_TOKEN_TTL_MS:
            return "bad_expiry"
        if sum(1 for grant in self.tokens.values() if grant.issuer == tx.issuer and not grant.revoked
               and grant.uses_left > 0 and grant.expires_ms >= time_ms) >= MAX_TOKENS_PER_ISSUER:
            return "too_many_tokens"
        return None

    def _alive_problem(self, tx: Alive, validators: ValidatorSet, time_ms: int) -> str | None:
        if self.recent_blocks.get(tx.at_height) != tx.block_id:
            return "unknown_block"      # names a block this chain does not have: it does not hold the chain
        entry = self.standby.get(tx.key)
        if entry is not None:
            return "too_soon" if entry.alive_ms and time_ms - entry.alive_ms < ALIVE_MIN_GAP_MS else None
        if tx.key in self.departed and self._candidate_problem(tx.key, validators) is None \
                and tx.key not in self.removed:
            return "standby_full" if len(self.standby) >= MAX_STANDBY else None
        return "not_standby"

    def _evictable(self) -> bytes | None:
        """Whom a node the validators approved displaces when the list is full: one never seen alive (those a
        token admitted first, longest waiting first), else the one silent longest, else the newest a token
        admitted; never one the validators approved that is live."""
        def rank(key: bytes) -> tuple[int, int, int, bytes]:
            entry = self.standby[key]
            by_token = entry.via == "token"
            if not entry.alive_ms:
                return (0, 0 if by_token else 1, entry.height, key)
            return (1, 0, entry.alive_ms, key) if entry.via != "approved" else (2, 0, entry.alive_ms, key)
        ranked = sorted(self.standby, key=rank)
        for key in ranked:
            if rank(key)[0] < 2:
                return key
        return None

    # ------------------------------------------------------------------ carrying out
    def apply(self, tx: MembershipTx, validators: ValidatorSet, height: int, time_ms: int) -> ValidatorSet | None:
        """Carry out a transaction `problem` accepted; the next validator set if it changes one."""
        if isinstance(tx, (Join, Approve, Leave, Grant, Revoke, Alive)):
            ttl = ALIVE_RECENT if isinstance(tx, Alive) else REQUEST_TTL
            self.consumed[consumed_key(tx)] = tx.at_height + ttl
        if isinstance(tx, Join):
            grant = self.tokens[tx.token]
            grant.uses_left -= 1
            self._admit(tx.key, Standby(height, time_ms, "token", tx.token, 0, grant.issuer))
            return None
        if isinstance(tx, Grant):
            spent = sorted((t.height, k) for k, t in self.tokens.items() if t.issuer == tx.issuer
                           and (t.revoked or t.uses_left <= 0 or t.expires_ms < time_ms))
            held = sum(1 for t in self.tokens.values() if t.issuer == tx.issuer)
            for _, old in spent[:max(0, held + 1 - MAX_TOKEN_RECORDS_PER_ISSUER)]:
                del self.tokens[old]        # the oldest spent records make room: an issuer's records stay bounded
            self.tokens[tx.token] = Token(tx.issuer, tx.uses, tx.expires_ms, False, height)
            return None
        if isinstance(tx, Revoke):
            self.tokens[tx.token].revoked = True
            for key in [k for k, e in self.standby.items() if e.via == "token" and e.token == tx.token]:
                del self.standby[key]
            return None
        if isinstance(tx, Alive):
            entry = self.standby.get(tx.key)
            if entry is None:
                del self.departed[tx.key]
                self._admit(tx.key, Standby(height, time_ms, "returned", b"", time_ms))
            else:
                entry.alive_ms = time_ms
            return None
        if isinstance(tx, Approve):
            target = (tx.action, tx.key)
            voters = self.approvals.setdefault(target, {})
            voters[tx.approver] = time_ms
            if sum(1 for key in voters if key in validators) >= validators.quorum:
                del self.approvals[target]
                if tx.action == "add":
                    self.removed.pop(tx.key, None)
                    self.departed.pop(tx.key, None)
                    self._admit(tx.key, Standby(height, time_ms, "approved", b"", 0))
                elif tx.key in validators:
                    self.removals.add(tx.key)
                else:
                    self.standby.pop(tx.key, None)
                    self.departed.pop(tx.key, None)
                    self._remember(self.removed, tx.key, height)
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
                self.probation[key] = (height, time_ms)
            return after
        assert isinstance(tx, (Leave, Remove))
        if tx.successor is not None:
            del self.standby[tx.successor]
            self.probation[tx.successor] = (height, time_ms)
        self.removals.discard(tx.key)
        on_probation = self.probation.pop(tx.key, None) is not None
        if isinstance(tx, Remove) and tx.reason == "equivocation":
            self.banned.add(tx.key)
            self._forget(tx.key)
        elif isinstance(tx, Remove) and tx.reason == "approved":
            self._forget(tx.key)
            self._remember(self.removed, tx.key, height)
        elif isinstance(tx, Leave):     # off the list until it comes back and asks (`alive`)
            self._remember(self.departed, tx.key, height)
        elif on_probation:      # seated and never signed: back only by the validators' approval
            self._forget(tx.key)
            self._remember(self.removed, tx.key, height)
        else:       # jailed: its approval stands, so it may have a seat again when it is back
            self._admit(tx.key, Standby(height, time_ms, "jailed", b"", 0))
        return after

    def _admit(self, key: bytes, entry: Standby) -> None:
        self.approvals.pop(("add", key), None)      # approvals to add it can no longer complete: their slots free
        if key not in self.standby and len(self.standby) >= MAX_STANDBY:
            evicted = self._evictable()
            if evicted is not None:
                del self.standby[evicted]
        self.standby[key] = entry

    @staticmethod
    def _remember(table: dict[bytes, int], key: bytes, height: int) -> None:
        table.pop(key, None)
        table[key] = height
        while len(table) > MAX_REMEMBERED:
            del table[min(table, key=lambda k: (table[k], k))]

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
        self.probation = {k: v for k, v in self.probation.items() if k in validators}

    def end_block(self, height: int, time_ms: int, block_id: bytes) -> None:
        """What the block's time has passed: consumed requests past their TTL, expired tokens, standbys silent too
        long; and the block's id, for the `alive`s that will name it."""
        self.consumed = {k: until for k, until in self.consumed.items() if until >= height}
        for target, voters in list(self.approvals.items()):
            kept = {k: ms for k, ms in voters.items() if time_ms - ms <= APPROVAL_KEPT_MS}
            if kept:
                self.approvals[target] = kept
            else:
                del self.approvals[target]
        self.tokens = {k: t for k, t in self.tokens.items() if t.expires_ms + TOKEN_KEPT_MS >= time_ms}
        for key, entry in list(self.standby.items()):
            keep = JAILED_EXPIRE_MS if entry.via == "jailed" else SILENT_EXPIRE_MS
            if time_ms - max(entry.since_ms, entry.alive_ms) > keep:
                del self.standby[key]
        self.recent_blocks[height] = block_id
        self.recent_blocks.pop(height - ALIVE_RECENT, None)
        if len(self.recent_blocks) > ALIVE_RECENT:      # after a restore or a recovery: keep the newest only
            for old in sorted(self.recent_blocks)[:-ALIVE_RECENT]:
                del self.recent_blocks[old]

    # ------------------------------------------------------------------ views and snapshots
    def wire(self) -> Wire:
        return [sorted([k, *e.wire()] for k, e in self.standby.items()),
                sorted([a, t, sorted([k, h] for k, h in v.items())] for (a, t), v in self.approvals.items()),
                sorted(self.removals), sorted(self.banned),
                sorted([k, *t.wire()] for k, t in self.tokens.items()),
                sorted([k, h] for k, h in self.removed.items()), sorted([k, h] for k, h in self.departed.items()),
                sorted([k, h] for k, h in self.consumed.items()), sorted([h, b] for h, b in self.recent_blocks.items()),
                sorted([k, h, ms] for k, (h, ms) in self.probation.items())]

    @classmethod
    def from_wire(cls, data: Wire) -> "Seats":
        """From a snapshot's part (its hash already checked); a wrong shape raises TypeError or ValueError."""
        seats = cls()
        standby, approvals, removals, banned, tokens, removed, departed, consumed, recent, probation = data
        seats.standby = {bytes(k): Standby(int(h), int(ms), _via(v), bytes(t), int(alive), bytes(i))
                         for k, h, ms, v, t, alive, i in standby}
        seats.approvals = {(str(a), bytes(t)): {bytes(k): int(h) for k, h in v} for a, t, v in approvals}
        seats.removals = {bytes(k) for k in removals}
        seats.banned = {bytes(k) for k in banned}
        seats.tokens = {bytes(k): Token(bytes(i), int(u), int(e), bool(r), int(h)) for k, i, u, e, r, h in tokens}
        seats.removed = {bytes(k): int(h) for k, h in removed}
        seats.departed = {bytes(k): int(h) for k, h in departed}
        seats.consumed = {bytes(k): int(h) for k, h in consumed}
        seats.recent_blocks = {int(h): bytes(b) for h, b in recent}
        seats.probation = {bytes(k): (int(h), int(ms)) for k, h, ms in probation}
        return seats

    def hash(self) -> bytes:
        return digest("exchange-node/seats/v2", self.wire())

    def standby_order(self) -> list[bytes]:
        """Standbys, longest waiting first (then by key, so every node orders them alike)."""
        return sorted(self.standby, key=lambda k: (self.standby[k].height, k))


def _via(value: object) -> str:
    if value not in VIA:
        raise ValueError(f"unknown standby origin {value!r}")
    return str(value)


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
