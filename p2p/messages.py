"""Message types on the wire and their receipt-time checks.

Every frame is a map with `type`. Known types are checked against a schema (required fields,
types, size bounds); a malformed known type is a protocol violation that closes the link.
Unknown types are counted and ignored so newer peers can add messages.

What a node understands is a `Schemas` registry its PeerManager owns: the link protocol's own types
(`LINK_SCHEMAS`) are always in it; every other layer declares its table as a constant (routing,
RPC, peer exchange, chain) and adds it when the composition root builds that layer, so a type is
accepted because a component that handles it was built, never because its module was imported.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from p2p.close_reason import CloseReason, GivenReason

# Protocol 2: every link is Noise-encrypted and the node id is proven by the Noise handshake.
# A node links only with peers whose hello states a version in [MIN, MAX]; a release that stays
# compatible with older peers raises MAX and keeps MIN.
PROTOCOL_VERSION = 2
MIN_PROTOCOL_VERSION = 2
MAX_PROTOCOL_VERSION = 2
NODE_ID_LEN = 40
MAX_STR = 256
MAX_LIST = 512


class ProtocolError(Exception):
    """A message that breaks the protocol; `reason` becomes the close reason."""

    def __init__(self, reason: GivenReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# A field's value as a check sees it: decoded msgpack, not yet checked. Any because msgpack values carry no
# static type: the check is what gives the field one.
FieldValue = Any
FieldCheck = Callable[[FieldValue], bool]


def is_str(max_len: int = MAX_STR) -> FieldCheck:
    return lambda v: type(v) is str and len(v) <= max_len


def is_bytes(min_len: int, max_len: int) -> FieldCheck:
    return lambda v: type(v) is bytes and min_len <= len(v) <= max_len


def is_int(lo: int = 0, hi: int = (1 << 63) - 1) -> FieldCheck:
    return lambda v: type(v) is int and lo <= v <= hi


def is_number(v: FieldValue) -> bool:
    return type(v) is int or type(v) is float


def is_node_id(v: FieldValue) -> bool:
    return type(v) is str and len(v) == NODE_ID_LEN


def is_any(v: FieldValue) -> bool:
    """Any value: a required field only has to be present; an optional one is not looked at."""
    return True


def is_list(max_len: int = MAX_LIST, item: FieldCheck | None = None) -> FieldCheck:
    if item is None:
        return lambda v: type(v) is list and len(v) <= max_len
    return lambda v: type(v) is list and len(v) <= max_len and all(item(x) for x in v)


def optional(check: FieldCheck) -> FieldCheck:
    return lambda v: v is None or check(v)


def custom(func: FieldCheck) -> FieldCheck:
    """Any predicate over the field's value."""
    return func


_MISSING = object()
# A frame as decoded: msgpack's map of a message's fields. Any because msgpack values carry no static type:
# each type's schema checks its fields before a handler sees them, and handlers read them from there on.
Message = dict[str, Any]
FieldChecks = dict[str, FieldCheck]
Schema = tuple[FieldChecks, FieldChecks]    # (required fields, optional fields), each name -> check
SchemaTable = Mapping[str, Schema]
MessageCheck = Callable[[Message], "str | None"]


def schema(required: FieldChecks, optional_fields: FieldChecks | None = None) -> Schema:
    return required, optional_fields or {}


def _compile(required: FieldChecks, optional_fields: FieldChecks) -> MessageCheck:
    """`validate(message) -> name of the first bad field, or None`, with the fields to look at fixed once:
    a required field that may hold anything is only looked up, an optional one is not looked at."""
    checked = tuple((name, check) for name, check in required.items() if check is not is_any)
    present = tuple(name for name, check in required.items() if check is is_any)
    optional_checked = tuple((name, check) for name, check in optional_fields.items() if check is not is_any)

    def validate(message: Message) -> str | None:
        for name, check in checked:
            value = message.get(name, _MISSING)
            if value is _MISSING or not check(value):
                return name
        for name in present:
            if name not in message:
                return name
        for name, check in optional_checked:
            value = message.get(name, _MISSING)
            if value is not _MISSING and not check(value):
                return name
        return None

    return validate


class Schemas:
    """The message types one node understands, each with its compiled check (see the module doc)."""

    def __init__(self, *tables: SchemaTable) -> None:
        self.checks: dict[str, MessageCheck] = {}     # read directly on the link's hot path
        self._declared: dict[str, Schema] = {}
        for table in (LINK_SCHEMAS, *tables):
            self.add(table)

    def add(self, table: SchemaTable) -> None:
        """Accept the table's types. Adding the same declaration again is a no-op (a component built
        twice on one PeerManager); a second, different declaration of a type is a programming error."""
        for kind, declared in table.items():
            known = self._declared.get(kind)
            if known is declared:
                continue
            if known is not None:
                raise ValueError(f"message type {kind!r} is declared twice")
            self._declared[kind] = declared
            self.checks[kind] = _compile(*declared)

    def __contains__(self, kind: object) -> bool:
        return kind in self.checks

    def types(self) -> Iterable[str]:
        return self.checks.keys()

    def validate(self, message: Message) -> bool:
        """True if the type is known and the message is well formed; False if the type is unknown.
        Raises ProtocolError(MALFORMED_MESSAGE) for a known type with bad fields."""
        check = self.checks.get(message["type"])
        if check is None:
            return False
        bad = check(message)
        if bad is not None:
            raise ProtocolError(CloseReason.MALFORMED_MESSAGE, f"{message['type']}.{bad}")
        return True


# --- link-level messages -------------------------------------------------------------------

LINK_SCHEMAS: SchemaTable = {
    # The hello, sent inside the encrypted channel once the Noise handshake has proven `node_id`.
    # Fields a higher layer adds (the hello_fields of its peer hooks) travel alongside and are not checked here.
    "handshake": schema(
        {
            "node_id": is_node_id,
            "protocol": is_int(0, (1 << 63) - 1),
            "network": is_str(64),
            "listen_port": is_int(0, 65535),
        },
        {
            "listen_host": optional(is_str(255)),
            "capabilities": is_list(64, is_str(64)),
            "services": is_list(256, is_str(128)),
            "software": is_str(128),
            "ts": is_number,
            "dial_seq": is_int(),
            "observed_host": is_str(64),
        },
    ),
    "handshake_ack": schema({}),  # "your hello is accepted": a link opens once both sides said it
    "heartbeat": schema(
        {"ts": is_number},
        {
            "echo": optional(is_number),
            "hold": optional(is_number),
            "links": is_list(1024, is_node_id),
            "watermark": is_any,
            "reachability": is_str(16),
        },
    ),
    "goodbye": schema({"reason": is_str(64)}, {"detail": is_str(512)}),
}


def goodbye(reason: str, detail: str = "") -> Message:
    message: dict[str, Any] = {"type": "goodbye", "reason": reason}
    if detail:
        message["detail"] = detail[:512]
    return message
