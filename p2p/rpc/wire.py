"""RPC and routing message types on the wire, with their receipt-time schemas.

Plain dicts with short keys (one msgpack map per frame, no envelope objects):

- `rpc_request`  {rid, svc, p?, ttl?}: `rid` is unique per requesting node, `p` the payload,
  `ttl` the seconds the requester will wait (the server gives up on the handler after it).
- `rpc_response` {rid, r?} or {rid, err, msg?, after?}: a result, or an error code (never a traceback);
  `after` is the seconds to wait before asking again (`rate_limited`).
- `rpc_cancel`   {rid}: the requester gave up; the server cancels the handler if still running.
- `services`     {services}: the sender's service list changed (the handshake carries the first one).
- `hint`         {id, origin, ts, subject, status, pk, sig, latency_ms?, error_rate?, service?}:
  signed peer-health gossip, flooded through the MessageRouter.

Requests and responses sent through the MessageRouter (no direct link) also carry its envelope
(`id`, `origin`, `ts`, `hops`, `dst`), like every routed application message. Who sent them is
never taken on trust: on a direct link `origin` must be the link's own node (the Noise handshake
proved it; PeerManager.on_message drops and penalises anything else), and a request or answer
relayed by other nodes travels in a `relay` wrapper carrying its origin's Ed25519 signature over
the whole inner message, which every relay and the target verify (p2p/origin_auth.py) before the
RPC layer sees `origin`. Direct requests carry no signature: the encrypted link already proves
their author, and that path stays as fast as a plain link.
"""
from __future__ import annotations

from typing import Any

from p2p.messages import SchemaTable, is_any, is_bytes, is_int, is_list, is_node_id, is_number, is_str, optional, schema

# An RPC payload: the msgpack value a request carries (`p`) and an answer returns (`r`). Any because msgpack
# values carry no static type and the RPC layer only carries them: each service's handler checks its own.
Payload = Any

REQUEST = "rpc_request"
RESPONSE = "rpc_response"
CANCEL = "rpc_cancel"
SERVICES = "services"
HINT = "hint"

MAX_SERVICE_NAME = 128
MAX_SERVICES = 256


# The largest a hint ever is, encoded with its broadcast envelope: every field at its schema's limit takes under
# 700 bytes. A copy larger than this carries fields nobody signed (a relay could add them) and is dropped unread.
HINT_MAX_BYTES = 1024

_ROUTED = {"id": is_str(128), "origin": is_node_id, "ts": is_number, "dst": is_node_id, "hops": is_int(0, 255)}

RPC_SCHEMAS: SchemaTable = {
    REQUEST: schema({"rid": is_int(), "svc": is_str(MAX_SERVICE_NAME)}, {"p": is_any, "ttl": is_number, **_ROUTED}),
    RESPONSE: schema({"rid": is_int()}, {"r": is_any, "err": is_str(64), "msg": is_str(512), "after": is_number,
                                         **_ROUTED}),
    CANCEL: schema({"rid": is_int()}, dict(_ROUTED)),
    SERVICES: schema({"services": is_list(MAX_SERVICES, is_str(MAX_SERVICE_NAME))}),
    HINT: schema({"id": is_str(128), "origin": is_node_id, "ts": is_number, "subject": is_node_id,
                  "status": is_str(16), "pk": is_bytes(32, 32), "sig": is_bytes(64, 64)},
                 {"latency_ms": optional(is_number), "error_rate": optional(is_number),
                  "service": optional(is_str(MAX_SERVICE_NAME)), "hops": is_int(0, 255)}),
}
