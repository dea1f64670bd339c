"""RPC error codes: every failure crosses the wire (and reaches callers) as a short code plus a message.

A remote handler's exception never travels as a traceback: the server logs it and answers
`internal`. Handlers answer their own application codes by raising `RpcError(code, message)`.

Codes are split by whom they blame, which decides what the client does with them:
- PEER codes (`FAILURE_KIND`) say the serving peer could not serve: the adaptive router counts
  them against that peer and the request is retried on another peer within the retry budget.
- every other code is an answer: the peer is healthy, the request is not retried.
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

TIMEOUT = "timeout"                  # no answer within the timeout
LINK_CLOSED = "link_closed"          # the link to the peer went away with the request in flight
UNREACHABLE = "unreachable"          # no link and no route to the peer
OVERLOADED = "overloaded"            # the peer (or our own per-peer bound) refused: too many in flight
UNAVAILABLE = "unavailable"          # the peer offers the service but cannot serve it now
INTERNAL = "internal"                # the handler failed (details only in the serving node's log)
UNKNOWN_SERVICE = "unknown_service"  # the peer does not offer the service
BAD_REQUEST = "bad_request"          # malformed request or payload (the caller's fault)
NO_PEERS = "no_peers"                # nobody we are linked to offers the service
THROTTLED = "throttled"              # shed locally: client-side throttling or warm-up rate
CANCELLED = "cancelled"              # the caller gave up
RATE_LIMITED = "rate_limited"        # the serving peer's budget for this requester (or its relay) is spent for now

# PEER code -> failure kind for the adaptive router ("error", "timeout", "rejected").
FAILURE_KIND: dict[str, str] = {
    TIMEOUT: "timeout",
    LINK_CLOSED: "error",
    UNREACHABLE: "error",
    OVERLOADED: "rejected",
    RATE_LIMITED: "rejected",
    UNAVAILABLE: "error",
    INTERNAL: "error",
    UNKNOWN_SERVICE: "error",
}

MAX_MESSAGE = 200


class RpcErrorView(TypedDict):
    """An RPC error as the API answers it."""
    code: str
    message: str
    peer: NotRequired[str]             # the peer that answered or failed, when there was one
    attempts: NotRequired[int]


class RpcError(Exception):
    """An RPC failed with `code` (see the constants above); `peer` is the node that answered, if any."""

    def __init__(self, code: str, message: str = "", *, peer: str | None = None, attempts: int = 0,
                 retry_after: float | None = None) -> None:
        self.code = code
        self.message = message[:MAX_MESSAGE] if message else ""
        self.peer = peer
        self.attempts = attempts
        self.retry_after = retry_after       # seconds the serving peer asked us to wait (`rate_limited`)
        self.answered = False   # set when the serving peer answered with this code (it is healthy)
        super().__init__(f"{code}: {self.message}" if self.message else code)

    def as_dict(self) -> RpcErrorView:
        out: RpcErrorView = {"code": self.code, "message": self.message or self.code}
        if self.peer:
            out["peer"] = self.peer
        if self.attempts:
            out["attempts"] = self.attempts
        return out


def failure_kind(code: str) -> str | None:
    """The router failure kind of a PEER code, or None when the code is an application answer."""
    return FAILURE_KIND.get(code)
