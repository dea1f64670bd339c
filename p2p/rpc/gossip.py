"""HintGossip: signed peer-health hints between nodes, over the MessageRouter's broadcast.

Sending: every `interval` s each service's AdaptiveRouter is asked (`emit_hints`, through one
`HintEmitter` per service) whether our view of a peer changed (DEGRADED / HEALTHY, with
hysteresis); each hint is signed with the node key and broadcast, at most `rate` per second
(token bucket), and logged.

Receiving: a hint carries its origin's public key `pk`; the origin node id must derive from it and
the Ed25519 signature must cover the hint's fields, so a hint relayed by other nodes cannot be
forged or altered on the way. Forged hints are refused by the MessageRouter validator (not handled,
not forwarded, the neighbour that sent it penalised). Verified hints that are not stale go to the
service's router, which keeps them in its HintBook: advisory, capped, decaying, ignored for peers
with fresh local data, and only about peers the router already knows.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Protocol, TypedDict

import msgpack

from p2p.messages import Message
from p2p.resilience.token_bucket import TokenBucket
from p2p.rpc.hints import HintEmitter, HintPayload
from p2p.rpc.wire import HINT, HINT_MAX_BYTES

if TYPE_CHECKING:
    from p2p.peers import Identity
    from p2p.rpc.service import RpcService

log = logging.getLogger("p2p.rpc.hints")

SIGNED_FIELDS = ("id", "origin", "ts", "subject", "status", "service", "latency_ms", "error_rate")


def hint_proof(message: Message, network: str) -> bytes:
    """The bytes an origin signs: a fixed-order msgpack array of the hint's fields and the network id."""
    proof: bytes = msgpack.packb(["exchange-node/hint/1", network, *(message.get(k) for k in SIGNED_FIELDS)],
                                 use_bin_type=True)
    return proof


class HintPath(Protocol):
    """What hint gossip uses of the MessageRouter: a broadcast type with its validator, its subscribers,
    and broadcasting (the id it returns is not read)."""

    def subscribe(self, msg_type: str, handler: Callable[[Message, str], None]) -> None: ...

    def set_validator(self, msg_type: str, validator: Callable[[Message, str], bool | None], *,
                      origin_rate: float | None = None, max_bytes: int | None = None) -> None: ...

    def broadcast(self, message: Message) -> object: ...


class HintRecord(TypedDict):
    """A hint sent or received, as `recent` shows it."""
    direction: str                       # "sent" or "received"
    ts: float
    origin: str
    subject: str
    status: str
    service: str | None
    latency_ms: float | None
    error_rate: float | None


class HintsView(TypedDict):
    counters: dict[str, int]
    rate: float                          # hints we may send per second
    recent: list[HintRecord]             # the last hints sent and received


class HintGossip:
    def __init__(self, rpc: RpcService, identity: Identity, *, verify: Callable[[bytes, bytes, bytes], bool],
                 node_id_for: Callable[[bytes], str], network: str, rate: float = 2.0, interval: float = 0.5,
                 max_age: float = 60.0, wall_clock: Callable[[], float] = time.time) -> None:
        self.rpc = rpc
        self.identity = identity
        self.node_id: str = identity.node_id
        self._verify = verify
        self._node_id_for = node_id_for
        self.network = network
        self.interval = interval
        self.max_age = max_age
        self.wall_clock = wall_clock
        self.bucket = TokenBucket(rate, max(1.0, 2 * rate))
        self.emitters: dict[str, HintEmitter] = {}
        self.router: HintPath | None = None
        self.counters: dict[str, int] = {"sent": 0, "rate_limited": 0, "received": 0, "accepted": 0,
                                         "ignored": 0, "stale": 0, "forged": 0}
        self.recent: deque[HintRecord] = deque(maxlen=20)
        self._task: asyncio.Task[None] | None = None

    # -- wiring ----------------------------------------------------------------------------------
    def attach(self, router: HintPath) -> None:
        """Use `router` (MessageRouter: broadcast, subscribe, set_validator) for hints."""
        self.router = router
        router.subscribe(HINT, self.on_hint)     # any key may author a hint: budgeted per neighbour and origin
        router.set_validator(HINT, self.verify, origin_rate=2 * self.bucket.rate, max_bytes=HINT_MAX_BYTES)

    def start(self) -> None:
        if self._task is None and self.router is not None:
            self._task = asyncio.create_task(self._run(), name="rpc.hints")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:  # gossip must never stop on one bad round
                log.exception("hint round failed")

    # -- sending ---------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Ask every service router for hints worth saying and send them; returns how many were sent."""
        now = self.rpc.clock() if now is None else now
        sent = 0
        for service, router in list(self.rpc.routers.items()):
            emitter = self.emitters.get(service)
            if emitter is None:
                emitter = self.emitters[service] = HintEmitter()
            for payload in router.emit_hints(emitter, now):
                sent += self.send(service, payload)
        return sent

    def send(self, service: str, payload: HintPayload) -> bool:
        """Sign and broadcast one hint (a HintEmitter payload) about a peer, if the rate allows."""
        if self.router is None:
            return False
        if not self.bucket.try_take():
            self.counters["rate_limited"] += 1
            log.info("hint not sent (over %g/s): %s %s for %s", self.bucket.rate, payload["subject"][:12],
                     payload["status"], service)
            return False
        message: Message = {"type": HINT, "id": os.urandom(12).hex(), "origin": self.node_id, "ts": self.wall_clock(),
                   "subject": payload["subject"], "status": payload["status"], "service": service,
                   "latency_ms": payload.get("latency_ms"), "error_rate": payload.get("error_rate"),
                   "pk": self.identity.public_key_bytes}
        message["sig"] = self.identity.sign(hint_proof(message, self.network))
        self.router.broadcast(message)
        self.counters["sent"] += 1
        self._remember("sent", message)
        log.info("hint sent: peer %s %s for %s (latency %s ms, error rate %s)", message["subject"][:12],
                 message["status"], service, message["latency_ms"], message["error_rate"])
        return True

    # -- receiving -------------------------------------------------------------------------------
    def verify(self, message: Message, from_node: str) -> bool:
        """MessageRouter validator: the origin's key, its node id and the signature must all agree."""
        pk = message.get("pk")
        ok = (isinstance(pk, bytes) and self._node_id_for(pk) == message.get("origin")
              and self._verify(pk, message.get("sig", b""), hint_proof(message, self.network)))
        if not ok:
            self.counters["forged"] += 1
            log.warning("dropped a forged hint claiming origin %s (from neighbour %s)",
                        str(message.get("origin"))[:12], from_node[:12])
        return ok

    def on_hint(self, message: Message, from_node: str) -> None:
        """A hint broadcast by another node, delivered by the router only once `verify` (its validator) passed it."""
        self.counters["received"] += 1
        origin = message["origin"]
        if origin == self.node_id or abs(self.wall_clock() - message["ts"]) > self.max_age:
            self.counters["stale"] += 1
            return
        service = message.get("service")
        routers = self.rpc.routers
        targets = [routers[service]] if service in routers else ([] if service else list(routers.values()))
        now = self.rpc.clock()
        taken = False
        for router in targets:
            taken = router.on_hint(message, origin, now) or taken
        self.counters["accepted" if taken else "ignored"] += 1
        if taken:
            self._remember("received", message)
        log.debug("hint from %s: peer %s %s for %s: %s", origin[:12], message["subject"][:12], message["status"],
                  service, "taken" if taken else "ignored")

    # -- observability ---------------------------------------------------------------------------
    def _remember(self, direction: str, message: Message) -> None:
        self.recent.append({"direction": direction, "ts": message["ts"], "origin": message["origin"],
                            "subject": message["subject"], "status": message["status"],
                            "service": message.get("service"), "latency_ms": message.get("latency_ms"),
                            "error_rate": message.get("error_rate")})

    def snapshot(self) -> HintsView:
        return {"counters": dict(self.counters), "rate": self.bucket.rate, "recent": list(self.recent)}
