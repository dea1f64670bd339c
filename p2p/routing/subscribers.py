"""Subscribers: hands each routed message this node must handle to the handlers of its type, and
decides whom a handler's refusal blames."""
from __future__ import annotations

import logging
from typing import Protocol

from p2p.failure_log import InternalErrors
from p2p.messages import Message
from p2p import messages as m
from p2p.routing.envelope import INVALID_POINTS, Handler, RouterCounters, bump

log = logging.getLogger("p2p.router")


class Penalizer(Protocol):
    """What the subscribers need of the peer manager: penalties, and where a handler's own bug is reported."""

    @property
    def internal_errors(self) -> InternalErrors: ...

    def penalize(self, node_id: str, points: float, reason: str) -> None: ...


class Subscribers:
    def __init__(self, peers: Penalizer, counters: RouterCounters) -> None:
        self.peers = peers
        self.counters = counters
        self.handlers: dict[str, list[Handler]] = {}
        self.duplicate_listeners: list[Handler] = []  # called with each duplicate copy (diagnostics)

    def subscribe(self, msg_type: str, handler: Handler) -> None:
        self.handlers.setdefault(msg_type, []).append(handler)

    def unsubscribe(self, msg_type: str, handler: Handler) -> None:
        handlers = self.handlers.get(msg_type, [])
        if handler in handlers:
            handlers.remove(handler)

    def duplicate(self, message: Message, src: str) -> None:
        for listener in self.duplicate_listeners:
            listener(message, src)

    def deliver(self, message: Message, src: str, author: str | None) -> None:
        """Hand a message to its subscribers. A subscriber's ProtocolError is the author's fault: the
        neighbour's link closes if it wrote the message itself, else the author (if proven) is
        penalised. Any other exception is our bug."""
        handlers = self.handlers.get(message["type"])
        if not handlers:
            bump(self.counters.dropped, "no_subscriber")
            return
        self.counters.events["delivered_local"] += 1
        for handler in handlers:
            try:
                handler(message, src)
            except m.ProtocolError as exc:
                if author == src:
                    raise
                self.counters.events["rejected"] += 1
                bump(self.counters.dropped, f"rejected:{exc.reason}")
                if author is not None:
                    self.peers.penalize(author, INVALID_POINTS, f"{message['type']}: {exc.reason}")
                return
            except Exception as exc:  # noqa: BLE001
                self.counters.events["handler_errors"] += 1
                self.internal_error(f"router.subscriber.{message['type']}", exc)

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.peers.internal_errors.report(where, exc)
