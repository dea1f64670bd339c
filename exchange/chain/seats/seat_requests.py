"""This node's own seat requests: asking for standby with a join token, showing the validators it is live, giving
the seat back, and the operator's approvals, join tokens and revocations.

Each is a signed membership transaction offered to the validators; a proposer puts it in a block when the
seat rule allows (`block_builder.py`), and every node re-checks it there (`block_check.py`). Those a
validator signs name the epoch they were signed in: one still unordered when the set changes is signed again
for the new set, if it still applies.
"""
from __future__ import annotations

import logging
from typing import Protocol

from exchange.chain.effects import SendValidators
from exchange.chain.seats.join_token import JoinToken
from exchange.chain.state.membership import Alive, Approve, Grant, Join, Leave, MembershipTx, Revoke
from exchange.chain.consensus.tendermint import WAITING
from exchange.chain.effects import ChainEffect
from exchange.chain.mempool.pool import Mempool
from exchange.chain.consensus.tendermint import Tendermint
from exchange.chain.state.view import CoreBasics

log = logging.getLogger("exchange.chain")

class SeatCore(CoreBasics, Protocol):
    """The core as our seat requests use it: the state and the key they sign requests with, and the
    mempool they queue them in.
    Read-only (a part writes only the basics' `counters`)."""

    @property
    def consensus(self) -> Tendermint: ...

    def drain(self, now: float) -> None: ...

    def emit(self, effect: ChainEffect) -> None: ...

    @property
    def is_validator(self) -> bool: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def now_ms(self) -> int: ...

    @property
    def public_key(self) -> bytes: ...

    def set_now(self, now: float) -> None: ...

    def sign(self, data: bytes) -> bytes: ...


class NetworkHeight(Protocol):
    """What our seat requests need of block sync: the height the network has certainly reached."""

    def network_height(self, now: float, within: float = ...) -> int | None: ...


class TokenKey(Protocol):
    """The key of the join token this node was started with (`JoinToken.key`)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


RESIGN_FOR = 60.0       # s an operator's approval is signed again across set changes until it is ordered


class SeatRequests:
    """What this node asks of the validator set for itself, or as its operator decides."""

    def __init__(self, core: SeatCore, sync: NetworkHeight, join_token: TokenKey | None, now: float) -> None:
        self.core = core
        self.sync = sync
        self.join_token = join_token       # admits this node to standby while the log says it may
        self._next_join = now
        self._next_alive = now
        self._token_refusal = ""           # why our token admits nobody now, as last logged
        self._approvals: dict[tuple[str, bytes], tuple[Approve, float]] = {}   # ours, signed again until ordered
        self._leaving = False              # our seat handed back at stop: this run asks for none again

    def tick(self, now: float) -> None:
        self.maybe_join(now)
        self.maybe_alive(now)
        self._resign_approvals(now)

    def maybe_join(self, now: float) -> None:
        """With a join token the log holds, ask for standby (a proposer then promotes us when the seat rule
        allows and the record shows us live). Without one, a node never asks: seats are granted by the
        validators' approvals."""
        state = self.core.state
        token = self.join_token
        if token is None or self._leaving or self.core.config.role != "auto" or state.genesis.pinned \
                or self.core.is_validator \
                or self.core.public_key in state.seats.standby or now < self._next_join:
            return
        # f + 1 validators' word (or a certificate we checked), never a stranger's claim (`claims.py`)
        best = self.sync.network_height(now, self.core.config.live_after)
        if best is None or best > state.height + 1:
            return      # not caught up (or hearing too few validators): a seat would only slow the others down
        self._next_join = now + self.core.config.join_retry
        key = token.public_key
        why = state.seats.token_usable(key, state.validators, state.time_ms)
        if why is None and self.core.public_key in state.seats.removed:
            why = "removed"
        if why is not None:
            if why != self._token_refusal:
                self._token_refusal = why
                log.error("JOIN_TOKEN %s admits this node to no seat: %s%s", key.hex()[:16], _TOKEN_WORDS.get(why, why),
                          "" if why == "unknown_token" else "; this node follows without a seat")
            return
        self._token_refusal = ""
        tx = Join.create(self.core.chain_id, self.core.public_key, key, state.height, token.sign)
        self.core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))

    def maybe_alive(self, now: float) -> None:
        """A standby, or a validator that left gracefully and runs again, shows the validators it is live and holds
        the chain: the record of these, not anyone's claim, decides who may take a seat."""
        state = self.core.state
        seats, key = state.seats, self.core.public_key
        if now < self._next_alive or self._leaving or state.height == 0 or self.core.config.role != "auto" \
                or state.genesis.pinned \
                or not (key in seats.standby or (key in seats.departed and not self.core.is_validator)):
            return
        best = self.sync.network_height(now, self.core.config.live_after)
        if best is None or best > state.height + 1:
            return      # behind: an `alive` naming an old block would be refused anyway
        self._next_alive = now + self.core.config.alive_interval
        tx = Alive.create(self.core.chain_id, key, state.height, state.last_block_id, self.core.sign)
        self.core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))

    def request_leave(self, now: float) -> Leave | None:
        """Give our seat back (a graceful stop), to the longest-waiting standby the record shows live, if there is
        one. None when we hold no seat or the set is pinned."""
        self.core.set_now(now)
        state = self.core.state
        if not self.core.is_validator or state.genesis.pinned:
            return None
        live = [k for k in state.seats.live_standbys(max(state.time_ms, self.core.now_ms)) if k != self.core.public_key
                and state.seats.successor_safe(state.validators, self.core.public_key, k)]
        successor = live[0] if live else None
        if len(state.validators) <= 1 and successor is None:
            return None
        self._leaving = True        # stopping: the `alive` a departed validator sends to ask back would re-seat us
        tx = Leave.create(self.core.chain_id, self.core.public_key, state.validators.epoch, state.height, successor,
                          self.core.sign)
        self._offer(tx, now)
        return tx

    def approve(self, action: str, key: bytes, now: float) -> Approve:
        """Our signed approval that `key` gets (`add`) or loses (`remove`) a seat; raises ValueError when it
        cannot apply now (with the reason). Signed again for a new set until ordered (RESIGN_FOR)."""
        self.core.set_now(now)
        tx = self._approval(action, key)
        state = self.core.state
        why = state.membership_problem(tx, state.height + 1, state.time_ms)
        if why is not None:
            raise ValueError(why)
        self._approvals[(action, key)] = (tx, now + RESIGN_FOR)
        self._offer(tx, now)
        return tx

    def grant(self, uses: int, ttl_s: float, seed: bytes, now: float) -> tuple[JoinToken, Grant]:
        """A new join token (from the 32 random bytes `seed`) for `uses` nodes, valid `ttl_s` of block time, signed
        by us; raises ValueError when it cannot apply now. The token is a secret: it is returned, never logged."""
        token = JoinToken(self.core.chain_id, seed)
        return token, self.offer_grant(token.key.public_key, uses, ttl_s, now)

    def offer_grant(self, token: bytes, uses: int, ttl_s: float, now: float) -> Grant:
        """Our signed grant of the join token whose public key is `token`; ValueError when it cannot apply now."""
        self.core.set_now(now)
        state = self.core.state
        expires_ms = max(state.time_ms, self.core.now_ms) + int(ttl_s * 1000)
        tx = Grant.create(self.core.chain_id, token, self.core.public_key, state.validators.epoch, uses, expires_ms,
                          state.height, self.core.sign)
        why = state.membership_problem(tx, state.height + 1, max(state.time_ms, self.core.now_ms))
        if why is not None:
            raise ValueError(why)
        self._offer(tx, now)
        return tx

    def revoke(self, token: bytes, now: float) -> Revoke:
        """Our signed revocation of join token `token` (its public key); ValueError when it cannot apply now."""
        self.core.set_now(now)
        state = self.core.state
        tx = Revoke.create(self.core.chain_id, token, self.core.public_key, state.validators.epoch, state.height,
                           self.core.sign)
        why = state.membership_problem(tx, state.height + 1, state.time_ms)
        if why is not None:
            raise ValueError(why)
        self._offer(tx, now)
        return tx

    def _approval(self, action: str, key: bytes) -> Approve:
        state = self.core.state
        return Approve.create(self.core.chain_id, action, key, self.core.public_key, state.validators.epoch,
                              state.height, self.core.sign)

    def _resign_approvals(self, now: float) -> None:
        """Our approvals still unordered when the set changed: signed again for the new set while they apply."""
        state = self.core.state
        for target, (tx, until) in list(self._approvals.items()):
            voters = state.seats.approvals.get(target, {})
            if now > until or self.core.public_key in voters or not self.core.is_validator:
                del self._approvals[target]
                continue
            if tx.epoch == state.validators.epoch:
                continue
            again = self._approval(*target)
            if state.membership_problem(again, state.height + 1, state.time_ms) is not None:
                del self._approvals[target]     # carried out, or no longer possible
                continue
            self._approvals[target] = (again, until)
            self._offer(again, now)

    def _offer(self, tx: MembershipTx, now: float) -> None:
        self.core.mempool.add_membership(tx)
        self.core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))
        if self.core.is_validator and self.core.consensus.step == WAITING:
            self.core.consensus.kick(now)
        self.core.drain(now)


_TOKEN_WORDS = {
    "unknown_token": "the chain holds no such token (not issued yet, or for another network)",
    "token_revoked": "a validator revoked it", "token_expired": "it expired",
    "token_used_up": "it has admitted as many nodes as it was issued for",
    "token_issuer_gone": "the validator that issued it no longer holds a seat",
    "removed": "the validators removed this node; only their approval (`validators add`) brings it back"}
