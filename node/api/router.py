"""The MessageRouter's operator surface: its Prometheus families for GET /metrics and, only when
DEBUG_API is on, /debug endpoints that inject diagnostic "note" messages and list what arrived
(used by the integration tests and `python -m bench broadcast`).

- `POST /debug/broadcast {"payload"?, "type"?: "note", "count"?: 1}` -> `{"ids": [...]}`
- `POST /debug/send {"node_id", "payload"?}` -> `{"outcome", "id", "via", "reason"}`
- `GET /debug/received?type=note` -> `{"received": [[id, origin, ts, first_received, copies, handled, hops]]}`
  (`ts` is the origin's time.time() at send, `first_received` ours at first arrival; bounded, newest kept)
- `DELETE /debug/received` forgets them
- `POST /debug/load {"rate", "duration", "size"}` broadcasts notes of about `size` bytes at `rate`/s
  for `duration` s in the background; `GET /debug/load` -> `{"running", "sent", "lag_p50_ms",
  "lag_p99_ms", "lag_max_ms"}` (how late the generator's 10 ms sleeps woke: event-loop/CPU stalls)
"""
from __future__ import annotations

import asyncio
import gc
import time
from collections import OrderedDict
from typing import Any, Iterator, cast

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.api.base import ApiError, ApiNode, JsonObject, json_response, node_of
from node.metrics import CounterNames, labelled_counter, split_counters
from p2p.messages import Message
from p2p.resilience.protection import MODES as PROTECTION_MODES, Protection
from p2p.router import MessageRouter

DEBUG_TYPES = ("note",)
MAX_RECORDS = 200_000


ROUTER_EVENTS = CounterNames("exchange_node_router", "Message router")
GRENACHE_PATH = CounterNames("exchange_node_grenache_path", "Routed messages over Grenache")


def router_metrics(router: MessageRouter) -> Iterator[Metric]:
    counters = router.counters
    yield labelled_counter("exchange_node_router_messages_sent_total", "Messages sent, by type", "type",
                           counters.sent)
    yield labelled_counter("exchange_node_router_messages_received_total", "Messages received, by type", "type",
                           counters.received)
    yield labelled_counter("exchange_node_router_duplicates_total", "Copies of messages already handled, by type",
                           "type", counters.duplicates)
    yield labelled_counter("exchange_node_router_dropped_total", "Messages dropped, by reason", "reason",
                           counters.dropped)
    yield from split_counters(ROUTER_EVENTS, counters.events)
    yield labelled_counter("exchange_node_router_unicast_sent_total",
                           "Unicasts that left this node (sent or flushed), by path", "path", counters.unicast_sent)
    yield labelled_counter("exchange_node_router_unicast_received_total",
                           "Unicasts for this node that arrived, by path", "path", counters.unicast_received)
    yield labelled_counter("exchange_node_router_broadcast_received_total",
                           "Broadcasts handled, by the path of their first copy", "path", counters.broadcast_received)
    if router.grenache is not None:
        yield from split_counters(GRENACHE_PATH, router.grenache.counters)
        yield GaugeMetricFamily("exchange_node_grenache_path_members",
                                "Nodes serving the shared Grenache message name, as last looked up",
                                value=len(router.grenache.members))
        yield labelled_counter("exchange_node_grenache_path_refused_total",
                               "Requests and connections the Grenache message endpoint refused or closed over a "
                               "client's share, by reason", "reason", router.grenache.limits.refused_counts())
    yield GaugeMetricFamily("exchange_node_router_amplification", "Copies received per unique broadcast received",
                            value=router.amplification or 0.0)
    yield GaugeMetricFamily("exchange_node_router_queued", "Messages held for unreachable peers",
                            value=len(router.queue))
    yield GaugeMetricFamily("exchange_node_router_queued_bytes", "Encoded bytes of the messages held for unreachable "
                            "peers", value=router.queue.bytes)
    yield GaugeMetricFamily("exchange_node_router_seen_ids", "Message ids in the dedup cache", value=len(router.seen))
    yield from protection_metrics(router.protection)


def protection_metrics(protection: Protection) -> Iterator[Metric]:
    """The storm protection's mode and canary share, and what it limited (or, in shadow mode, would have)."""
    snapshot = protection.snapshot()
    mode = GaugeMetricFamily("exchange_node_protection_mode", "Storm protection mode (1 = current)", labels=["mode"])
    for name in PROTECTION_MODES:
        mode.add_metric([name], 1.0 if snapshot["mode"] == name else 0.0)
    yield mode
    yield GaugeMetricFamily("exchange_node_protection_canary", "Fraction of traffic the protection mode applies to",
                            value=snapshot["canary"])
    yield labelled_counter("exchange_node_protection_units_total",
                           "Units of traffic (dials, RPCs, held messages) by protection verdict", "verdict",
                           snapshot["units"])
    limited = CounterMetricFamily("exchange_node_protection_limits_total",
                                  "Limits the storm protection applied (enforced) or only counted (shadowed)",
                                  labels=["mechanism", "outcome"])
    for mechanism, row in snapshot["mechanisms"].items():
        for outcome, count in row.items():
            limited.add_metric([mechanism, outcome], count)
    yield limited


class NoteRecorder:
    """Remembers diagnostic messages this node handled: first arrival time, copies, handler calls."""

    def __init__(self, router: MessageRouter, limit: int = MAX_RECORDS) -> None:
        self.limit = limit
        self.records: OrderedDict[Any, list[Any]] = OrderedDict()   # keyed by the note's id, as it came
        for kind in DEBUG_TYPES:
            router.subscribe(kind, self.on_message)
        router.duplicate_listeners.append(self.on_duplicate)

    def on_message(self, message: Message, src: str) -> None:
        record = self.records.get(message["id"])
        if record is not None:
            record[5] += 1
            return
        self.records[message["id"]] = [message["id"], message["origin"], message.get("ts"), time.time(), 1, 1,
                                       message.get("hops")]
        if len(self.records) > self.limit:
            self.records.popitem(last=False)

    def on_duplicate(self, message: Message, src: str) -> None:
        record = self.records.get(message.get("id"))
        if record is not None:
            record[4] += 1


class LoadGenerator:
    """Broadcasts notes at a steady rate; also records how late its own 10 ms sleeps wake up, i.e.
    how long this node's event loop was busy or the process was kept off the CPU."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.lags: list[float] = []
        self.stalls: list[tuple[float, float]] = []  # (time.time() at wake-up, ms) of stalls over 100 ms
        self.gc_pauses: list[float] = []  # seconds per garbage collection during a run
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif len(self.gc_pauses) < 100_000:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    def lag_summary(self) -> JsonObject:
        lags = sorted(self.lags)
        if not lags:
            return {"lag_p50_ms": None, "lag_p99_ms": None, "lag_max_ms": None}
        pick = lambda q: round(1000 * lags[min(len(lags) - 1, int(q * (len(lags) - 1)))], 1)  # noqa: E731
        return {"lag_p50_ms": pick(0.5), "lag_p99_ms": pick(0.99), "lag_max_ms": round(1000 * lags[-1], 1),
                "stalls": self.stalls, "gc_count": len(self.gc_pauses),
                "gc_max_ms": round(1000 * max(self.gc_pauses, default=0.0), 1)}

    async def run(self, router: MessageRouter, rate: float, duration: float, size: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        filler = "x" * max(0, size - 120)  # the envelope and fields take about 120 bytes
        self.sent = 0
        self.lags = []
        self.stalls = []
        self.gc_pauses = []
        gc.callbacks.append(self._on_gc)
        try:
            await self._run(router, rate, duration, filler, loop, started)
        finally:
            gc.callbacks.remove(self._on_gc)

    async def _run(self, router: MessageRouter, rate: float, duration: float, filler: str,
                   loop: asyncio.AbstractEventLoop, started: float) -> None:
        while True:
            elapsed = loop.time() - started
            if elapsed >= duration:
                return
            due = int(elapsed * rate) + 1 - self.sent
            for _ in range(due):
                self.sent += 1
                router.broadcast({"type": "note", "payload": {"market": "BTC-USD", "side": "buy", "price": "64123.5",
                                                              "qty": "0.25", "seq": self.sent, "pad": filler}})
            pause = min(0.01, max(0.0, (self.sent / rate) - (loop.time() - started)))
            before = loop.time()
            await asyncio.sleep(pause)
            lag = max(0.0, loop.time() - before - pause)
            if len(self.lags) < 100_000:
                self.lags.append(lag)
            if lag > 0.1 and len(self.stalls) < 100:
                self.stalls.append((time.time(), round(1000 * lag, 1)))


def install_debug_api(node: ApiNode) -> None:
    """Subscribe the recorder and add the /debug routes to the control API (call only with DEBUG_API on)."""
    recorder = NoteRecorder(node.router)
    load = LoadGenerator()

    async def read_json(request: web.Request) -> JsonObject:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "bad_json", "body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "body must be an object")
        return body

    def debug_type(body: JsonObject) -> str:
        kind = body.get("type", "note")
        if kind not in DEBUG_TYPES:
            raise ApiError(400, "bad_type", f"type must be one of {', '.join(DEBUG_TYPES)}", "type")
        return cast("str", kind)

    async def post_broadcast(request: web.Request) -> web.Response:
        body = await read_json(request)
        kind = debug_type(body)
        count = body.get("count", 1)
        if not isinstance(count, int) or not 1 <= count <= 10_000:
            raise ApiError(400, "bad_count", "count must be 1-10000", "count")
        router = node_of(request).router
        ids = [router.broadcast({"type": kind, "payload": body.get("payload")}) for _ in range(count)]
        return json_response({"ids": ids})

    async def post_send(request: web.Request) -> web.Response:
        body = await read_json(request)
        kind = debug_type(body)
        target = body.get("node_id")
        if not isinstance(target, str) or len(target) != 40:
            raise ApiError(400, "bad_node_id", "node_id must be a 40-character node id", "node_id")
        result = node_of(request).router.send_to_peer(target, {"type": kind, "payload": body.get("payload")})
        return json_response(result.as_dict())

    async def get_received(request: web.Request) -> web.Response:
        debug_type(dict(request.query))
        return json_response({"received": list(recorder.records.values())})

    async def delete_received(request: web.Request) -> web.Response:
        recorder.records.clear()
        return json_response({"cleared": True})

    async def post_load(request: web.Request) -> web.Response:
        body = await read_json(request)
        rate, duration, size = body.get("rate", 10.0), body.get("duration", 10.0), body.get("size", 200)
        if not all(isinstance(v, (int, float)) and v > 0 for v in (rate, duration, size)) or rate > 10_000:
            raise ApiError(400, "bad_load", "rate (<=10000), duration and size must be positive numbers")
        if load.task is not None and not load.task.done():
            raise ApiError(409, "busy", "a load run is in progress")
        load.task = asyncio.create_task(load.run(node_of(request).router, float(rate), float(duration), int(size)))
        return json_response({"started": True})

    async def get_load(request: web.Request) -> web.Response:
        return json_response({"running": load.task is not None and not load.task.done(), "sent": load.sent,
                              **load.lag_summary()})

    def extend(app: web.Application) -> None:
        app.router.add_post("/debug/broadcast", post_broadcast)
        app.router.add_post("/debug/send", post_send)
        app.router.add_get("/debug/received", get_received)
        app.router.add_delete("/debug/received", delete_received)
        app.router.add_post("/debug/load", post_load)
        app.router.add_get("/debug/load", get_load)

    node.api_extensions.append(extend)
