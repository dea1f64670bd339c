"""Built-in RPC services: `ping` and the diagnostic `test.echo`, which a node offers only with DEBUG_API (a
production node's router table lists no test service). The chain registers its own: `chain.submit`,
`chain.genesis`, `chain.snapshot`."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Protocol, TypedDict

from p2p.rpc import errors as e
from p2p.rpc.server import Handler
from p2p.rpc.wire import Payload

PING = "ping"
TEST_ECHO = "test.echo"


@dataclass
class FaultSpec:
    """How `test.echo` misbehaves on this node: `delay` seconds before each answer, a `fail`
    fraction of requests answered `internal` after `fail_delay` seconds, and a `capacity` (answers
    per second, 0 = unlimited) with room for `queue` requests waiting, past which it answers
    `overloaded` at once: a service that falls behind under load."""

    delay: float = 0.0
    fail: float = 0.0
    fail_delay: float = 0.0
    capacity: float = 0.0
    queue: float = 100.0

    @classmethod
    def parse(cls, text: str | None) -> "FaultSpec":
        """'delay=0.05,fail=0.5,fail_delay=0' (any subset; empty = no fault). ValueError if malformed."""
        spec = cls()
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ("delay", "fail", "fail_delay", "capacity", "queue"):
                raise ValueError(f"expected delay=S, fail=FRACTION, fail_delay=S, capacity=PER_S or queue=N, "
                                 f"got {part!r}")
            setattr(spec, key, float(value))
        spec.check()
        return spec

    def check(self) -> None:
        if not (0 <= self.delay <= 60 and 0 <= self.fail_delay <= 60 and 0 <= self.fail <= 1
                and 0 <= self.capacity <= 1e6 and 0 <= self.queue <= 1e6):
            raise ValueError("need 0 <= delay, fail_delay <= 60, 0 <= fail <= 1, 0 <= capacity, queue <= 1e6")

    def as_dict(self) -> dict[str, float]:
        return {"delay": self.delay, "fail": self.fail, "fail_delay": self.fail_delay, "capacity": self.capacity,
                "queue": self.queue}


class ServiceRegistry(Protocol):
    """Where the built-in services are offered (an RpcService)."""

    def register(self, service: str, handler: Handler) -> None: ...


class Pong(TypedDict):
    pong: bool
    node_id: str
    ts: float


class Builtins:
    """Handlers of the built-in services for one node."""

    def __init__(self, node_id: str, *, fault: FaultSpec | None = None, rng: random.Random | None = None) -> None:
        self.node_id = node_id
        self.fault = fault or FaultSpec()
        self.rng = rng or random.Random()
        self._next_free = 0.0   # when the capacity-limited echo can answer its next request

    def misbehave(self, fault: FaultSpec) -> None:
        """How `test.echo` misbehaves from now on (the debug API's fault injection)."""
        self.fault = fault

    def register_all(self, rpc: ServiceRegistry, *, test_services: bool) -> None:
        """Register `ping`, and `test.echo` when `test_services` (the node's DEBUG_API) is on."""
        rpc.register(PING, self.ping)
        if test_services:
            rpc.register(TEST_ECHO, self.echo)

    def ping(self, payload: Payload, peer: str) -> Pong:
        return {"pong": True, "node_id": self.node_id, "ts": time.time()}

    def echo(self, payload: Payload, peer: str) -> Payload:
        """Answers {"echo": payload, "node_id": ...}, misbehaving as `fault` says; the payload
        {"error": "<code>"} answers that error code (to test error paths end to end)."""
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            raise e.RpcError(payload["error"][:64], "requested by the caller")
        fault = self.fault
        if fault.capacity:
            now = time.monotonic()
            start = max(now, self._next_free)
            if (start - now) * fault.capacity >= fault.queue:
                raise e.RpcError(e.OVERLOADED, "over capacity")
            self._next_free = start + 1.0 / fault.capacity
            if start > now:
                return self._echo_later(payload, start - now)
        if fault.fail and self.rng.random() < fault.fail:
            if fault.fail_delay:
                return self._fail_later(fault.fail_delay)
            raise e.RpcError(e.INTERNAL, "injected fault")
        if fault.delay:
            return self._echo_later(payload, fault.delay)
        return {"echo": payload, "node_id": self.node_id}

    async def _echo_later(self, payload: Payload, delay: float) -> Payload:
        await asyncio.sleep(delay)
        return {"echo": payload, "node_id": self.node_id}

    async def _fail_later(self, delay: float) -> Payload:
        await asyncio.sleep(delay)
        raise e.RpcError(e.INTERNAL, "injected fault")
