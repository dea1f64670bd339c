"""What `exchange-node validators` shows: the validator set, each member's state (last signed, absent for how
long, last heard, blocks proposed), the standbys in the order they get seats, and the approvals pending."""
from __future__ import annotations

from typing import Iterable, TypedDict

from exchange.chain.core import ChainCore
from exchange.crypto import node_id_for


class MemberView(TypedDict):
    node_id: str
    me: bool
    last_signed_height: int
    absent_s: float                 # block time without its signature (0.0 while at most two blocks behind)
    heard_s_ago: float | None       # None: not heard since this node started
    proposed: int                   # its blocks final here since this node started
    on_probation: bool              # seated lately and not yet seen signing (seats.py: removed if it never does)


class StandbyView(TypedDict):
    node_id: str
    since_height: int
    via: str                        # token, approved, jailed or returned
    live: bool                      # its `alive` ordered lately: it may take a seat
    alive_s_ago: float | None       # block time since its last `alive` (None: none yet)


class ApprovalView(TypedDict):
    action: str                     # add or remove
    node_id: str
    approvals: int
    needed: int
    approvers: list[str]


class SeatsView(TypedDict):
    """What `exchange-node validators` and `GET /validators` show."""

    epoch: int
    size: int
    quorum: int
    faults_tolerated: int
    max_validators: int
    seat_rule: str
    pinned: bool
    next_size: int | None           # the size the set may grow to next (None: it cannot)
    tokens: int                     # join tokens that may still admit a node
    validators: list[MemberView]
    standby: list[StandbyView]      # in the order they get seats
    pending: list[ApprovalView]
    removals: list[str]
    banned: list[str]


def key_of(core: ChainCore | None, linked_keys: Iterable[bytes], node_id: str) -> bytes | None:
    """The public key behind a node id, from what this node knows first-hand: the chain's own records
    (validators, standbys, approvals, validators that left) or a link that proved it (`linked_keys`)."""
    known: list[bytes] = []
    if core is not None:
        state = core.state
        known += [*state.validators.keys, *state.seats.standby, *(t for _, t in state.seats.approvals),
                  *state.seats.departed]
    known += [key for key in linked_keys if len(key) == 32]
    return next((key for key in known if node_id_for(key) == node_id), None)


def seats_view(core: ChainCore, proposed: dict[bytes, int], now: float) -> SeatsView:
    """The validator set, each member's state, the standbys and the approvals pending."""
    state = core.state
    validators, seats, genesis = state.validators, state.seats, state.genesis
    heard = {node_id: (None if seconds is None else round(seconds, 1))
             for node_id, seconds, _ in core.validator_liveness(now)}
    members: list[MemberView] = []
    for key in validators.keys:
        seen_height, seen_ms = state.last_seen.get(key, (0, 0))
        members.append({"node_id": node_id_for(key), "me": key == core.public_key,
                        "last_signed_height": seen_height,
                        "absent_s": round(max(0.0, state.time_ms - seen_ms) / 1000, 1)
                        if state.height - seen_height > 2 else 0.0,
                        "heard_s_ago": heard.get(node_id_for(key)), "proposed": proposed.get(key, 0),
                        "on_probation": key in seats.probation})
    pending: list[ApprovalView] = []
    for (action, target), voters in sorted(seats.approvals.items()):
        counted = [k for k in voters if k in validators]
        pending.append({"action": action, "node_id": node_id_for(target), "approvals": len(counted),
                        "needed": validators.quorum, "approvers": sorted(node_id_for(k) for k in counted)})
    size = len(validators)
    next_size = next((n for n in range(size + 1, genesis.max_validators + 1) if genesis.size_allowed(n)), None)
    return {"epoch": validators.epoch, "size": size, "quorum": validators.quorum,
            "faults_tolerated": validators.faults, "max_validators": genesis.max_validators,
            "seat_rule": genesis.seat_rule, "pinned": genesis.pinned, "next_size": next_size,
            "tokens": sum(1 for t in seats.tokens if seats.token_usable(t, validators, state.time_ms) is None),
            "validators": members,
            "standby": [{"node_id": node_id_for(k), "since_height": seats.standby[k].height,
                         "via": seats.standby[k].via, "live": seats.is_live(k, state.time_ms),
                         "alive_s_ago": None if not seats.standby[k].alive_ms
                         else round(max(0, state.time_ms - seats.standby[k].alive_ms) / 1000, 1)}
                        for k in seats.standby_order()],
            "pending": pending, "removals": sorted(node_id_for(k) for k in seats.removals),
            "banned": sorted(node_id_for(k) for k in seats.banned)}
