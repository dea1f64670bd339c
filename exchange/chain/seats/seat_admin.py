"""Our operator's say over the validator seats (`exchange-node validators`, `/validators`): approving that a
node gets or loses a seat, issuing and revoking join tokens, consenting to a recovery, and the view of the set
(`seats_view.py`).
The transactions they sign go to the core; the chain orders and counts them (`seat_requests.py`,
`recovery.py`)."""
from __future__ import annotations

import logging
from typing import Callable, TypedDict

from exchange.chain.seats.founding import Founding
from exchange.chain.ports import CoreGate
from exchange.chain.recovery.rules import RecoveryStatus
from exchange.chain.state.seats import MAX_TOKEN_TTL_MS, MAX_TOKEN_USES, Seats
from exchange.chain.seats.seats_view import SeatsView, key_of, seats_view
from exchange.crypto import node_id_for

log = logging.getLogger("exchange.chain")


class Approval(SeatsView):
    """`approve`'s answer: the approval signed (`approval`, its transaction id) and the seats after it."""

    action: str
    node_id: str
    approval: str


class TokenView(TypedDict):
    """A join token as the log holds it: never its secret."""

    id: str                 # the first 16 hex digits of its public key
    issuer: str             # the validator that granted it
    uses_left: int
    expires_ms: int
    revoked: bool
    expired: bool           # by the last block's time
    admitted: list[str]     # node ids of the standbys it admitted that still wait for a seat


class TokenIssued(TypedDict):
    """`issue_token`'s answer: the token itself (a secret: for the operator only) and its grant."""

    token: str
    id: str
    issuer: str
    uses: int
    expires_ms: int
    final: bool             # the grant is in a certified block: the token admits nodes now


class RecoveryConsent(SeatsView):
    """`recover`'s answer: the recovery as it stands after our consent, and the seats."""

    recovery: RecoveryStatus


class SeatAdmin:
    """The operator's seat commands against the core the service runs (the service's `seats`)."""

    def __init__(self, gate: CoreGate, founding: Founding, proposed: dict[bytes, int],
                 clock: Callable[[], float]) -> None:
        self.gate = gate
        self.founding = founding
        self.proposed = proposed        # the service's: validator key -> its blocks final here since start
        self.clock = clock

    def key_of(self, node_id: str) -> bytes | None:
        """The public key behind a node id, from what this node knows first-hand (`seats_view.py`)."""
        return key_of(self.gate.core, [p.public_key for p in self.founding.peers.values()], node_id)

    def approve(self, action: str, node_id: str) -> Approval:
        """Our operator's signed approval that `node_id` gets (`add`) or loses (`remove`) a seat. Raises
        ValueError (with why) when it cannot apply now, NotReady when no chain runs here."""
        core = self.gate.usable_core()
        if not core.is_validator:
            raise ValueError("this node holds no validator seat: run the command against a validator's node")
        if core.genesis.pinned:
            raise ValueError("the validator set is pinned (VALIDATORS): it never changes")
        key = self.key_of(node_id)
        if key is None:
            raise ValueError(f"node {node_id} is unknown here: start it with this network's bootstrap address and "
                             f"run the command again once it is linked")
        tx = core.seat_requests.approve(action, key, self.clock())
        self.gate.schedule_pump()
        log.warning("approved %s of validator %s (height %d)", action, node_id[:12], core.height)
        return {"action": action, "node_id": node_id, "approval": tx.id, **self.view()}

    def issue_token(self, uses: int, ttl_s: float, seed: bytes) -> tuple[TokenIssued, bytes]:
        """A join token our node grants through the log, for `uses` nodes, valid `ttl_s` s, made from the 32
        random bytes `seed`: its answer (`final` False: the driver waits for the block, `token_desk.py`) and its
        public key. Raises ValueError (why) when it cannot be issued, NotReady when no chain runs here."""
        core = self.gate.usable_core()
        if not core.is_validator:
            raise ValueError("this node holds no validator seat: only a validator issues join tokens")
        if core.genesis.pinned:
            raise ValueError("the validator set is pinned (VALIDATORS): it never changes, so no token admits anyone")
        if not 1 <= uses <= MAX_TOKEN_USES:
            raise ValueError(f"uses must be 1 to {MAX_TOKEN_USES}")
        if not 0 < ttl_s * 1000 <= MAX_TOKEN_TTL_MS:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_TOKEN_TTL_MS // 86_400_000} days")
        token, grant = core.seat_requests.grant(uses, ttl_s, seed, self.clock())
        self.gate.schedule_pump()
        key = token.key.public_key
        log.warning("issued join token %s for %d node(s), valid %.0f s", key.hex()[:16], uses, ttl_s)
        return ({"token": token.text(), "id": key.hex()[:16], "issuer": core.node_id, "uses": uses,
                 "expires_ms": grant.expires_ms, "final": False}, key)

    def tokens(self) -> list[TokenView]:
        """The join tokens the log holds (until an hour after they expire), newest first."""
        state = self.gate.usable_core().state
        return [_token_view(state.seats, key, state.time_ms)
                for key in sorted(state.seats.tokens, key=lambda k: -state.seats.tokens[k].height)]

    def revoke_token(self, token_id: str) -> bytes:
        """Revoke the join token whose id (a prefix of its public key, 8 hex digits at least) is `token_id`: it
        admits nobody more, and the standbys it admitted leave the list. Its public key; ValueError when no single
        live token matches."""
        core = self.gate.usable_core()
        if not core.is_validator:
            raise ValueError("this node holds no validator seat: only a validator revokes join tokens")
        seats = core.state.seats
        wanted = token_id.strip().lower()
        matches = [k for k in seats.tokens if len(wanted) >= 8 and k.hex().startswith(wanted)]
        if len(matches) != 1:
            raise ValueError(f"no join token {token_id} here" if not matches else
                             f"{len(matches)} tokens start with {token_id}: give more of the id")
        key = matches[0]
        core.seat_requests.revoke(key, self.clock())
        self.gate.schedule_pump()
        log.warning("revoked join token %s", key.hex()[:16])
        return key

    def token_view(self, key: bytes) -> TokenView:
        state = self.gate.usable_core().state
        return _token_view(state.seats, key, state.time_ms)

    def seats_hold(self, done: Callable[[Seats], bool]) -> bool:
        """Whether `done` holds of the seats of the chain running here (False when none runs)."""
        core = self.gate.core
        return core is not None and done(core.state.seats)

    def recover(self, node_ids: list[str]) -> RecoveryConsent:
        """Our operator's consent that the validators `node_ids` (this one among them) take the chain on from
        the last certified block, as the whole new set: the way out of a halt with validators gone for good
        (exchange/chain/recovery/halt.py). Raises ValueError (why) when it cannot be given."""
        core = self.gate.usable_core()
        by_id = {node_id_for(k): k for k in core.state.validators.keys}
        unknown = [n for n in node_ids if n not in by_id]
        if unknown:
            raise ValueError(f"not a validator of the current set: {', '.join(unknown)} (a recovery keeps only "
                             f"validators that hold a seat)")
        answer = core.halt_recovery.consent(tuple(by_id[n] for n in node_ids), self.clock())
        self.gate.schedule_pump()
        return {"recovery": answer, **self.view()}

    def view(self) -> SeatsView:
        """The validator set, each member's state, the standbys and the approvals pending (`seats_view.py`)."""
        return seats_view(self.gate.usable_core(), self.proposed, self.clock())


def _token_view(seats: Seats, key: bytes, time_ms: int) -> TokenView:
    grant = seats.tokens.get(key)
    admitted = sorted(node_id_for(k) for k, e in seats.standby.items() if e.via == "token" and e.token == key)
    if grant is None:       # expired (and so dropped) since it was asked for
        return {"id": key.hex()[:16], "issuer": "", "uses_left": 0, "expires_ms": 0, "revoked": False,
                "expired": True, "admitted": admitted}
    return {"id": key.hex()[:16], "issuer": node_id_for(grant.issuer), "uses_left": grant.uses_left,
            "expires_ms": grant.expires_ms, "revoked": grant.revoked, "expired": grant.expires_ms < time_ms,
            "admitted": admitted}
