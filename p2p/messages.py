"""Message types on the wire and their receipt-time checks.

Every frame is a map with `type`. Known types are checked against a schema (required fields,
types, size bounds); a malformed known type is a protocol violation that closes the link.
Unknown types are counted and ignored so newer peers can add messages. Later layers
(router, replication, RPC) register their own types with `register_schema`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
NODE_ID_LEN = 40
NONCE_LEN = 32
MAX_STR = 256
MAX_LIST = 512


class ProtocolError(Exception):
    """A message that breaks the protocol; `reason` becomes the close reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


Check = Callable[[Any], bool]


def is_str(max_len: int = MAX_STR) -> Check:
    return lambda v: type(v) is str and len(v) <= max_len


def is_bytes(min_len: int, max_len: int) -> Check:
    return lambda v: type(v) is bytes and min_len <= len(v) <= max_len


def is_int(lo: int = 0, hi: int = (1 << 63) - 1) -> Check:
    return lambda v: type(v) is int and lo <= v <= hi


def is_number(v: Any) -> bool:
    return type(v) in (int, float)


def is_list(max_len: int = MAX_LIST, item: Check | None = None) -> Check:
    def check(v: Any) -> bool:
        if type(v) is not list or len(v) > max_len:
            return False
        return item is None or all(item(x) for x in v)
    return check


def is_node_id(v: Any) -> bool:
    return type(v) is str and len(v) == NODE_ID_LEN


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


@dataclass(frozen=True, slots=True)
class Schema:
    required: tuple[tuple[str, Check], ...]
    optional: tuple[tuple[str, Check], ...] = ()


_SCHEMAS: dict[str, Schema] = {}


def register_schema(msg_type: str, required: dict[str, Check], optional_fields: dict[str, Check] | None = None) -> None:
    _SCHEMAS[msg_type] = Schema(tuple(required.items()), tuple((optional_fields or {}).items()))


def is_known(msg_type: str) -> bool:
    return msg_type in _SCHEMAS


def validate(message: dict) -> bool:
    """True if the type is known and the message is well formed; False if the type is unknown.

    Raises ProtocolError("malformed_message") for a known type with bad fields.
    """
    schema = _SCHEMAS.get(message["type"])
    if schema is None:
        return False
    for name, check in schema.required:
        if name not in message or not check(message[name]):
            raise ProtocolError("malformed_message", f"{message['type']}.{name}")
    for name, check in schema.optional:
        if name in message and not check(message[name]):
            raise ProtocolError("malformed_message", f"{message['type']}.{name}")
    return True


# --- link-level messages -------------------------------------------------------------------

register_schema(
    "handshake",
    {
        "node_id": is_node_id,
        "public_key": is_bytes(32, 32),
        "protocol": is_int(0, 1 << 16),
        "network": is_str(64),
        "listen_port": is_int(0, 65535),
        "nonce": is_bytes(NONCE_LEN, NONCE_LEN),
    },
    {
        "listen_host": optional(is_str(255)),
        "capabilities": is_list(64, is_str(64)),
        "services": is_list(256, is_str(128)),
        "software": is_str(128),
        "ts": is_number,
        "dial_seq": is_int(),
    },
)
register_schema("handshake_ack", {"node_id": is_node_id, "signature": is_bytes(64, 64)})
register_schema(
    "heartbeat",
    {"ts": is_number},
    {
        "echo": optional(is_number),
        "hold": optional(is_number),
        "links": is_list(1024, is_node_id),
        "watermark": optional(lambda v: True),
    },
)
register_schema("goodbye", {"reason": is_str(64)}, {"detail": is_str(512)})


def new_nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def handshake_proof(nonce: bytes, signer_id: str, verifier_id: str, network: str) -> bytes:
    """Bytes a node signs to prove it holds the key behind `signer_id` on this link.

    Binding the verifier's fresh nonce, both ids and the network id stops replay to another
    node or network.
    """
    return b"|".join((b"exchange-node/handshake/1", nonce, signer_id.encode(), verifier_id.encode(), network.encode()))


def goodbye(reason: str, detail: str = "") -> dict:
    message: dict[str, Any] = {"type": "goodbye", "reason": reason}
    if detail:
        message["detail"] = detail[:512]
    return message


def now() -> float:
    return time.time()
