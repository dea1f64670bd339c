"""What every routing path shares: the envelope of a routed message, its schemas, send outcomes and
the router's counters.

Envelope of a routed application message (any type a later layer registers, e.g. "order"):
``{"type", "id", "origin", "ts", "hops", ...payload}``; a unicast also carries ``"dst"``. A unicast
that must cross a neighbour travels inside a ``relay`` wrapper whose ``body`` is the
encoded message, signed by its origin (p2p/origin_auth.py), so relays need not know the inner type;
the Grenache path carries the same signed wrapper, since its HTTP caller has no authenticated link.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, TypedDict

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason

MAX_IDS = 1024  # ids per ihave / graft frame
MAX_HOPS_FIELD = 255
RELAY_MAX_HOPS = 3  # relays a unicast may cross
CONTROL_TYPES = ("relay", "ihave", "graft", "prune")
HELD = object()     # a validator's verdict "not yet": delivered here, not forwarded, nobody blamed
INVALID_POINTS = 20.0  # a broadcast that failed its type's validator, handed over by a neighbour


class Outcome(str, Enum):
    DELIVERED = "delivered"  # written to the direct link
    RELAYED = "relayed"  # written to a neighbour that links to the target
    GRENACHE = "grenache"  # handed to the Grenache path (its final outcome goes to `on_settled`)
    QUEUED = "queued"  # held until the target is reachable (see `on_settled`)
    DROPPED = "dropped"  # not sent; `reason` says why


MessageId = str | bytes     # a routed message's id: a str, or the bytes a signed broadcast's id is derived as


class SendResultView(TypedDict):
    outcome: str
    id: str | None                 # a bytes id as hex
    via: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    message_id: MessageId | None = None
    via: str | None = None  # the neighbour a relayed message went through ("grenache" for that path)
    reason: str | None = None  # why it was dropped

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.DROPPED

    def as_dict(self) -> SendResultView:
        mid = self.message_id.hex() if isinstance(self.message_id, bytes) else self.message_id
        return {"outcome": self.outcome.value, "id": mid, "via": self.via, "reason": self.reason}


Handler = Callable[[Message, str], None]  # (message, node id of the neighbour it came from)
Validator = Callable[[Message, str], "bool | None"]     # None: cannot be judged yet (held, not forwarded)


@dataclass(frozen=True, slots=True)
class BroadcastType:
    """How the router checks a broadcast type before forwarding it."""

    validator: Validator | None
    origin_signed: bool


def is_msg_id(v: m.FieldValue) -> bool:
    t = type(v)
    return (t is str and 0 < len(v) <= 128) or (t is bytes and 0 < len(v) <= 64)


def new_message_id() -> str:
    return os.urandom(12).hex()


is_hops = m.is_int(0, MAX_HOPS_FIELD)
_is_pk = m.is_bytes(32, 32)
_is_sig = m.is_bytes(64, 64)
ROUTING_SCHEMAS: m.SchemaTable = {
    "relay": m.schema({"id": is_msg_id, "origin": m.is_node_id, "dst": m.is_node_id, "hops": is_hops,
                       "body": m.is_bytes(1, 1 << 26), "pk": _is_pk, "sig": _is_sig}, {"ts": m.is_number}),
    # ihave/graft: parallel lists of message ids and their origins
    "ihave": m.schema({"ids": m.is_list(MAX_IDS, is_msg_id), "origins": m.is_list(MAX_IDS, m.is_node_id)}),
    "graft": m.schema({"ids": m.is_list(MAX_IDS, is_msg_id), "origins": m.is_list(MAX_IDS, m.is_node_id)}),
    "prune": m.schema({"origin": m.is_node_id}),
    # "note": a diagnostic broadcast/unicast type used by the debug API, tests and benchmarks.
    "note": m.schema({"id": is_msg_id, "origin": m.is_node_id},
                     {"payload": lambda v: True, "ts": m.is_number, "hops": is_hops, "dst": m.is_node_id,
                      "pk": _is_pk, "sig": _is_sig}),
}


def check_envelope(message: Message) -> None:
    """Raise ProtocolError unless the routing fields of a message with an id are well formed."""
    if not (is_msg_id(message["id"]) and m.is_node_id(message.get("origin"))
            and is_hops(message.get("hops", 0)) and m.is_number(message.get("ts", 0))
            and ("dst" not in message or m.is_node_id(message["dst"]))):
        raise m.ProtocolError(CloseReason.MALFORMED_MESSAGE, f"{message['type']}.envelope")


UNICAST_PATHS = ("direct", "relay", "grenache")
BROADCAST_PATHS = ("link", "grenache")


@dataclass
class RouterCounters:
    sent: dict[str, int] = field(default_factory=dict)  # frames written, per message type
    received: dict[str, int] = field(default_factory=dict)  # frames accepted (after the rate limit), per type
    duplicates: dict[str, int] = field(default_factory=dict)  # copies of already-seen ids, per type
    dropped: dict[str, int] = field(default_factory=dict)  # messages not delivered/sent, per reason
    # unicasts that left this node (sent now or flushed) and unicasts for us that arrived, by path
    unicast_sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNICAST_PATHS, 0))
    unicast_received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNICAST_PATHS, 0))
    # unique broadcasts by the path of their first copy
    broadcast_received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BROADCAST_PATHS, 0))
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys((
        "broadcasts", "forwarded_frames", "suppressed_sends", "unique_broadcasts", "broadcast_copies",
        "delivered_direct", "relayed_out", "relayed", "queued", "flushed", "expired", "hop_limited",
        "ihave_ids_sent", "ihave_ids_received", "grafts_sent", "grafts_served", "prunes_sent",
        "prunes_deferred", "prunes_received", "throttled", "flood_bans", "handler_errors", "delivered_local", "invalid",
        "rejected", "held", "paced"), 0))


def bump(table: dict[str, int], key: str, n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


def make_envelope(origin: str, message: Message, dst: str | None = None) -> Message:
    """A copy of `message` with the routing fields of a message `origin` sends now."""
    envelope = dict(message)
    envelope.setdefault("id", new_message_id())
    envelope["origin"] = origin
    envelope.setdefault("ts", time.time())
    envelope["hops"] = 0
    if dst is not None:
        envelope["dst"] = dst
    return envelope
