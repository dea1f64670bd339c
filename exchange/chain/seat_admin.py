"""Our operator's say over the validator seats (`exchange-node validators`, `/validators`): approving that a
node gets or loses a seat, consenting to a recovery, and the view of the set (`seats_view.py`).
The transactions they sign go to the core; the chain orders and counts them (`seat_requests.py`,
`recovery.py`)."""
from __future__ import annotations

import logging
from typing import Callable

from exchange.chain.founding import Founding
from exchange.chain.ports import CoreGate
from exchange.chain.recovery import RecoveryStatus
from exchange.chain.seats_view import SeatsView, key_of, seats_view
from exchange.crypto import node_id_for

log = logging.getLogger("exchange.chain")


class Approval(SeatsView):
    """`approve`'s answer: the approval signed (`approval`, its transaction id) and the seats after it."""

    action: str
    node_id: str
    approval: str


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
        tx = core.approve(action, key, self.clock())
        self.gate.schedule_pump()
        log.warning("approved %s of validator %s (height %d)", action, node_id[:12], core.height)
        return {"action": action, "node_id": node_id, "approval": tx.id, **self.view()}

    def recover(self, node_ids: list[str]) -> RecoveryConsent:
        """Our operator's consent that the validators `node_ids` (this one among them) take the chain on from
        the last certified block, as the whole new set: the way out of a halt with validators gone for good
        (exchange/chain/recovery.py). Raises ValueError (why) when it cannot be given."""
        core = self.gate.usable_core()
        by_id = {node_id_for(k): k for k in core.state.validators.keys}
        unknown = [n for n in node_ids if n not in by_id]
        if unknown:
            raise ValueError(f"not a validator of the current set: {', '.join(unknown)} (a recovery keeps only "
                             f"validators that hold a seat)")
        answer = core.recover(tuple(by_id[n] for n in node_ids), self.clock())
        self.gate.schedule_pump()
        return {"recovery": answer, **self.view()}

    def view(self) -> SeatsView:
        """The validator set, each member's state, the standbys and the approvals pending (`seats_view.py`)."""
        return seats_view(self.gate.usable_core(), self.proposed, self.clock())
