"""RpcServer: the services this node offers and the answering of `rpc_request` frames.

Before anything else a request is charged to its requester and to the neighbour that relayed it (`ServeBudget`,
p2p/rpc/serve_budget.py): past the budget it is answered `rate_limited` with the seconds to wait, and its handler
never runs; the bytes of every answer are charged to the same scopes once known.

A handler is `handler(payload, peer_id)` returning the result, or an awaitable of it. Plain
functions answer in the same event-loop pass with no task at all (the fast path); coroutine
functions run in one task per request, bounded per requesting peer (`max_in_flight_per_peer`,
beyond which the answer is `overloaded`), cancelled by `rpc_cancel` or when the requester's `ttl`
has run out. Errors go back as codes: `RpcError(code, message)` raised by a handler is sent as
is; any other exception is logged here and answered `internal`, without its text or traceback.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Awaitable, Callable, NamedTuple, Protocol, Union

from p2p.messages import Message
from p2p.failure_log import InternalErrors
from p2p.framing import encode_body
from p2p.rpc import errors as e
from p2p.rpc.serve_budget import ServeBudget
from p2p.rpc.wire import RESPONSE, Payload

log = logging.getLogger("p2p.rpc.server")

Handler = Callable[[Payload, str], Union[Payload, Awaitable[Payload]]]   # (payload, peer id) -> its answer
_PLAIN = frozenset({dict, list, str, int, float, bool, bytes, tuple, type(None)})  # never awaitable: skip the ABC check


class Replier(Protocol):
    """Where an answer goes: a PeerLink, or a route through the MessageRouter."""

    def send(self, message: Message) -> bool: ...


class RpcServer:
    def __init__(self, *, max_in_flight_per_peer: int = 256, budget: ServeBudget | None = None) -> None:
        self.max_in_flight_per_peer = max_in_flight_per_peer
        self.budget = budget            # None: nobody is metered (tests of the server alone)
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._active: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._per_peer: dict[str, int] = {}
        self.on_change: Callable[[], None] = lambda: None
        self.counters: dict[str, int] = {"requests": 0, "answered": 0, "errors": 0, "overloaded": 0,
                                         "rate_limited": 0, "unroutable": 0, "unknown_service": 0, "cancelled": 0,
                                         "expired": 0}
        self.served: dict[str, int] = {}   # requests per service
        self.internal_errors = InternalErrors(log)  # a handler's exception: traceback once, then counted

    # -- registry ------------------------------------------------------------------------------
    def register(self, service: str, handler: Handler) -> None:
        """Offer `service` (replacing an earlier handler of the same name)."""
        if not isinstance(service, str) or not 0 < len(service) <= 128:
            raise ValueError("service names are 1-128 characters")
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None))  # noqa: B004 - a callable object's own __call__
        new = service not in self._handlers
        self._handlers[service] = (handler, is_async)
        if new:
            self.on_change()

    def unregister(self, service: str) -> None:
        if self._handlers.pop(service, None) is not None:
            self.on_change()

    def services(self) -> list[str]:
        return sorted(self._handlers)

    def offers(self, service: str) -> bool:
        return service in self._handlers

    def handler(self, service: str) -> Handler | None:
        entry = self._handlers.get(service)
        return entry[0] if entry else None

    # -- requests ------------------------------------------------------------------------------
    def handle_request(self, message: Message, peer: str, replier: Replier, via: str | None = None,
                       subnet: str | None = None) -> None:
        """Answer one validated `rpc_request` from `peer` (relayed to us by the neighbour `via`, if it was, over a
        link from `subnet`: None for loopback); the answer goes to `replier.send`."""
        rid = message["rid"]
        service = message["svc"]
        counters = self.counters
        counters["requests"] += 1
        to = _Answering(replier, peer, via, subnet)
        if self.budget is not None:
            refusal = self.budget.admit(peer, via, subnet)
            if refusal is not None:
                counters["rate_limited"] += 1
                self._error(to, rid, e.RATE_LIMITED, f"over this node's {refusal.budget} budget for its "
                            f"{refusal.scope}; retry after {refusal.wait:.2f} s", after=refusal.wait)
                return
        entry = self._handlers.get(service)
        if entry is None:
            counters["unknown_service"] += 1
            self._error(to, rid, e.UNKNOWN_SERVICE, f"no service {service!r} here")
            return
        self.served[service] = self.served.get(service, 0) + 1
        handler, is_async = entry
        if is_async:
            self._start(handler, message, rid, to)
            return
        try:
            result = handler(message.get("p"), peer)
        except e.RpcError as exc:
            self._error(to, rid, exc.code, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - a failing handler must not take the link down
            self.internal_errors.report(f"rpc.handler.{service}", exc, f"request {rid} from {peer[:12]}")
            self._error(to, rid, e.INTERNAL, "handler failed")
            return
        if type(result) not in _PLAIN and inspect.isawaitable(result):  # a plain function returning a coroutine
            self._spawn(result, service, rid, to, message.get("ttl"))
            return
        self._answer(to, rid, result, service)

    def _start(self, handler: Handler, message: Message, rid: int, to: _Answering) -> None:
        peer = to.peer
        if self._per_peer.get(peer, 0) >= self.max_in_flight_per_peer:
            self.counters["overloaded"] += 1
            self._error(to, rid, e.OVERLOADED, f"more than {self.max_in_flight_per_peer} requests in flight")
            return
        try:
            awaitable = handler(message.get("p"), peer)
        except e.RpcError as exc:  # raised before the first await by a callable object
            self._error(to, rid, exc.code, exc.message)
            return
        except Exception as exc:  # noqa: BLE001
            self.internal_errors.report(f"rpc.handler.{message['svc']}", exc, f"request {rid} from {peer[:12]}")
            self._error(to, rid, e.INTERNAL, "handler failed")
            return
        self._spawn(awaitable, message["svc"], rid, to, message.get("ttl"))

    def _spawn(self, awaitable: Awaitable[Payload], service: str, rid: int, to: _Answering, ttl: float | None) -> None:
        peer = to.peer
        key = (peer, rid)
        if key in self._active:  # a requester reusing an id in flight: refuse, keep the first
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self._error(to, rid, e.BAD_REQUEST, "request id already in flight")
            return
        task = asyncio.ensure_future(self._run(awaitable, service, rid, to, ttl))
        self._active[key] = task
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1

    async def _run(self, awaitable: Awaitable[Payload], service: str, rid: int, to: _Answering,
                   ttl: float | None) -> None:
        peer = to.peer
        try:
            if ttl is not None and ttl > 0:
                async with asyncio.timeout(ttl):
                    result = await awaitable
            else:
                result = await awaitable
        except e.RpcError as exc:
            self._error(to, rid, exc.code, exc.message)
        except TimeoutError:
            self.counters["expired"] += 1
            self._error(to, rid, e.TIMEOUT, f"handler did not finish within {ttl:g}s")
        except asyncio.CancelledError:
            self.counters["cancelled"] += 1  # by rpc_cancel, a closed link or shutdown: nobody waits
        except Exception as exc:  # noqa: BLE001
            self.internal_errors.report(f"rpc.handler.{service}", exc, f"request {rid} from {peer[:12]}")
            self._error(to, rid, e.INTERNAL, "handler failed")
        else:
            self._answer(to, rid, result, service)
        finally:
            self._active.pop((peer, rid), None)
            left = self._per_peer.get(peer, 1) - 1
            if left > 0:
                self._per_peer[peer] = left
            else:
                self._per_peer.pop(peer, None)

    def handle_cancel(self, message: Message, peer: str) -> None:
        task = self._active.get((peer, message["rid"]))
        if task is not None:
            task.cancel()

    def peer_gone(self, peer: str) -> None:
        """The requester's link closed: stop its handlers (their answers could not be delivered)."""
        if not self._per_peer.get(peer):
            return
        for (owner, _), task in list(self._active.items()):
            if owner == peer:
                task.cancel()

    def in_flight(self, peer: str | None = None) -> int:
        return len(self._active) if peer is None else self._per_peer.get(peer, 0)

    async def stop(self) -> None:
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- answers -------------------------------------------------------------------------------
    def _charge(self, to: _Answering, reply: Message) -> None:
        """The answer's encoded bytes to its requester's and relay's budgets (raises what encoding raises)."""
        if self.budget is not None:
            self.budget.charge(to.peer, to.via, len(encode_body(reply)), to.subnet)

    def _answer(self, to: _Answering, rid: int, result: Payload, service: str) -> None:
        reply = {"type": RESPONSE, "rid": rid, "r": result}
        try:
            self._charge(to, reply)
            sent = to.replier.send(reply)
        except (TypeError, ValueError, OverflowError) as exc:
            log.warning("rpc %r result for request %d is not encodable: %s", service, rid, exc)
            self._error(to, rid, e.INTERNAL, "result not encodable")
            return
        if sent is False:
            # Refused by the link (oversized, or the link is gone), or no route to the requester: a small
            # error instead, which the same path may refuse too
            self._error(to, rid, e.INTERNAL, "result could not be sent (too large, or no route back)")
            return
        self.counters["answered"] += 1

    def _error(self, to: _Answering, rid: int, code: str, message: str = "", after: float | None = None) -> None:
        self.counters["errors"] += 1
        reply: dict[str, object] = {"type": RESPONSE, "rid": rid, "err": code}
        if message:
            reply["msg"] = message[: e.MAX_MESSAGE]
        if after is not None:
            reply["after"] = round(after, 3)
        try:
            if code != e.RATE_LIMITED:     # a refusal costs a few bytes, charged to nobody (not even the total)
                self._charge(to, reply)
            to.replier.send(reply)
        except Exception:  # the link may be gone; the requester times out
            log.debug("could not send rpc error %s for request %d", code, rid, exc_info=True)


class _Answering(NamedTuple):
    """Where one request's answer goes, and whose budgets it is charged to."""

    replier: Replier
    peer: str                   # the requester
    via: str | None             # the neighbour that relayed the request, if one did
    subnet: str | None          # the network of the link it came over (None: loopback or unknown)
