"""RpcClient: requests to one named peer, over its link (or relayed by the MessageRouter), and their answers.

Per request: one id from a node-wide counter, one future, no task and no timer of its own (requests
that expire in the same 10 ms tick share one timer). An answer
is matched by id and accepted only from the peer the request went to. A request ends exactly
once, with its result or an `RpcError`: the answer's error code, `timeout` (the timer fired; an
`rpc_cancel` then tells the peer to stop), `link_closed` (the link dropped with the request in
flight), `overloaded` (more than `max_in_flight_per_peer` of our requests already in flight to
that peer: refused locally before sending), `unreachable`, or `cancelled` handling: when the
awaiting caller is cancelled the entry is dropped, the peer is sent `rpc_cancel`, and
`asyncio.CancelledError` propagates as usual.
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import Callable, Mapping, NamedTuple

from p2p.messages import Message
from p2p.rpc import errors as e
from p2p.rpc.server import Replier
from p2p.rpc.wire import CANCEL, REQUEST, Payload

Route = Callable[[str, Message], bool]   # send a message to a node without a direct link; False if impossible


TICK = 0.01   # timeout resolution (s): requests expiring in the same tick share one timer


class _Pending(NamedTuple):
    future: asyncio.Future[Payload]      # resolves to the reply's result: msgpack data the caller checks
    peer: str
    timeout: float
    route: bool          # True when sent through the MessageRouter
    rid: int


_pending = tuple.__new__   # `_pending(_Pending, (...))`: a _Pending without the Python-level constructor


class RpcClient:
    """`links` maps node id -> an open link with `send(message) -> bool` (PeerManager.links)."""

    def __init__(self, links: Mapping[str, Replier], node_id: str, *, route: Route | None = None,
                 max_in_flight_per_peer: int = 256, default_timeout: float = 5.0) -> None:
        self.links = links
        self.node_id = node_id
        self.route = route
        self.max_in_flight_per_peer = max_in_flight_per_peer
        self.default_timeout = default_timeout
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self.per_peer: dict[str, int] = {}          # our requests in flight per peer (read-only outside)
        self._expiring: dict[int, list[int]] = {}   # tick number -> ids of requests that time out in it
        self.counters: dict[str, int] = {"sent": 0, "ok": 0, "errors": 0, "timeouts": 0, "link_closed": 0,
                                         "refused_local": 0, "cancelled": 0, "late": 0, "relayed": 0}

    def in_flight(self, peer: str | None = None) -> int:
        return len(self._pending) if peer is None else self.per_peer.get(peer, 0)

    # -- sending -------------------------------------------------------------------------------
    async def request(self, peer: str, service: str, payload: Payload = None, timeout: float | None = None) -> Payload:
        """Call `service` on node `peer`; returns the result or raises `RpcError`."""
        pending = self.start(peer, service, payload, timeout)
        try:
            return await pending.future
        except asyncio.CancelledError:
            self.abandon(pending)
            raise

    def start(self, peer: str, service: str, payload: Payload = None, timeout: float | None = None) -> _Pending:
        """Send the request now; await `.future` for the answer and call `abandon(pending)` if the
        waiter is cancelled (`request` does both; the routed fast path inlines them). Raises
        `RpcError` when the request cannot leave."""
        if timeout is None:
            timeout = self.default_timeout
        if timeout <= 0:
            raise e.RpcError(e.TIMEOUT, "no time left", peer=peer)
        count = self.per_peer.get(peer, 0)
        if count >= self.max_in_flight_per_peer:
            self.counters["refused_local"] += 1
            raise e.RpcError(e.OVERLOADED, f"{count} requests already in flight to this peer", peer=peer)
        rid = self._next_id
        self._next_id = rid + 1
        message = {"type": REQUEST, "rid": rid, "svc": service, "p": payload, "ttl": timeout}
        link = self.links.get(peer)
        routed = False
        if link is not None:
            try:
                sent = link.send(message)
            except (TypeError, ValueError, OverflowError) as exc:
                raise e.RpcError(e.BAD_REQUEST, f"payload not encodable: {exc}", peer=peer) from None
            if not sent:
                raise e.RpcError(e.LINK_CLOSED, "link refused the request (closed or frame too large)", peer=peer)
        elif self.route is not None:
            message.update(id=f"{self.node_id}:{rid}", origin=self.node_id, ts=time.time())
            if not self.route(peer, message):
                raise e.RpcError(e.UNREACHABLE, "no link or route to the peer", peer=peer)
            routed = True
            self.counters["relayed"] += 1
        else:
            raise e.RpcError(e.UNREACHABLE, "no link to the peer", peer=peer)
        loop = asyncio.get_running_loop()
        pending = _pending(_Pending, (loop.create_future(), peer, timeout, routed, rid))
        self._pending[rid] = pending
        # One timer per TICK, not per request: expiry may be up to TICK late; finished requests
        # are skipped when their tick fires (ids are never reused).
        tick = math.ceil((loop.time() + timeout) / TICK)
        expiring = self._expiring.get(tick)
        if expiring is None:
            self._expiring[tick] = [rid]
            loop.call_at(tick * TICK, self._expire_tick, tick)
        else:
            expiring.append(rid)
        self.per_peer[peer] = count + 1
        self.counters["sent"] += 1
        return pending

    def abandon(self, pending: _Pending) -> None:
        """The waiter of a started request was cancelled: forget it and tell the peer to stop."""
        rid = pending.rid
        if self._pending.get(rid) is pending:  # the caller gave up, not us
            self._finish(rid, pending)
            self.counters["cancelled"] += 1
            self._send_cancel(pending, rid)

    def _finish(self, rid: int, pending: _Pending) -> None:
        del self._pending[rid]
        left = self.per_peer[pending.peer] - 1
        if left:
            self.per_peer[pending.peer] = left
        else:
            del self.per_peer[pending.peer]

    def _send_cancel(self, pending: _Pending, rid: int) -> None:
        message = {"type": CANCEL, "rid": rid}
        link = self.links.get(pending.peer)
        try:
            if link is not None:
                link.send(message)
            elif pending.route and self.route is not None:
                message.update(id=f"{self.node_id}:c{rid}", origin=self.node_id, ts=time.time())
                self.route(pending.peer, message)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def _expire_tick(self, tick: int) -> None:
        pending_by_id = self._pending
        for rid in self._expiring.pop(tick, ()):
            pending = pending_by_id.get(rid)
            if pending is None:
                continue
            self._finish(rid, pending)
            self.counters["timeouts"] += 1
            self._send_cancel(pending, rid)
            if not pending.future.done():
                pending.future.set_exception(
                    e.RpcError(e.TIMEOUT, f"no answer within {pending.timeout:g}s", peer=pending.peer))

    # -- receiving -----------------------------------------------------------------------------
    def handle_response(self, message: Message, peer: str) -> bool:
        """An `rpc_response` from `peer`; False when it matches nothing we wait for (late, or forged)."""
        rid = message["rid"]
        pending = self._pending.get(rid)
        if pending is None or pending.peer != peer:
            self.counters["late"] += 1
            return False
        self._finish(rid, pending)
        future = pending.future
        if future.done():
            return False
        err = message.get("err")
        if err is None:
            self.counters["ok"] += 1
            future.set_result(message.get("r"))
        else:
            self.counters["errors"] += 1
            after = message.get("after")
            future.set_exception(e.RpcError(err, message.get("msg") or "", peer=peer,
                                            retry_after=max(0.0, min(float(after), 60.0)) if after is not None else None))
        return True

    def link_closed(self, peer: str, reason: str = "") -> int:
        """Fail every request in flight on the closed direct link to `peer`; returns how many."""
        if not self.per_peer.get(peer):
            return 0
        failed = [(rid, p) for rid, p in self._pending.items() if p.peer == peer and not p.route]
        for rid, pending in failed:
            self._finish(rid, pending)
            self.counters["link_closed"] += 1
            if not pending.future.done():
                pending.future.set_exception(e.RpcError(e.LINK_CLOSED, reason or "link closed", peer=peer))
        return len(failed)

    def close(self) -> None:
        for rid, pending in list(self._pending.items()):
            self._finish(rid, pending)
            if not pending.future.done():
                pending.future.set_exception(e.RpcError(e.CANCELLED, "client shutting down", peer=pending.peer))
