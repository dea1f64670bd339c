"""Control API routes of the RPC side: `POST /rpc/{service}`, `GET /routing`, Prometheus metrics, and
(with DEBUG_API on) `/debug/rpc-fault`, `/debug/rpc-load`, `/debug/rpc-hint` and `/debug/rpc-backlog`
(node/api/debug_backlog.py) for tests, demos and diagnostics."""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Iterator, Mapping

import orjson
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.api.base import (ApiError, ApiNode, Json, JsonObject, body_number, json_response, node_of, read_json_object,
                           require_debug)
from node.api.debug_backlog import post_backlog
from node.metrics import CounterGroup, CounterNames, histogram_family, labelled_counter, split_counters
from p2p.rpc import errors as e
from p2p.rpc.builtins import FaultSpec
from p2p.rpc.hints import STATUSES

if TYPE_CHECKING:
    from node.rpc_component import NodeRpc
    from p2p.rpc.service import RpcService

# RpcError code -> HTTP status of `POST /rpc/{service}`.
HTTP_STATUS = {e.NO_PEERS: 503, e.THROTTLED: 503, e.TIMEOUT: 504, e.UNREACHABLE: 502, e.BAD_REQUEST: 400,
               e.UNKNOWN_SERVICE: 404}
MAX_LOAD_RATE = 5000.0
MAX_LOAD_SECONDS = 60.0


def extend(app: web.Application) -> None:
    app.router.add_post("/rpc/{service}", post_rpc)
    app.router.add_get("/routing", get_routing)
    app.router.add_post("/debug/rpc-fault", post_fault)
    app.router.add_post("/debug/rpc-load", post_load)
    app.router.add_post("/debug/rpc-backlog", post_backlog)
    app.router.add_post("/debug/rpc-hint", post_hint)


def rpc_error_response(exc: e.RpcError) -> web.Response:
    return json_response({"error": exc.as_dict()}, HTTP_STATUS.get(exc.code, 502))


async def post_rpc(request: web.Request) -> web.Response:
    """Body {"payload"?, "timeout"?, "peer"?, "grenache"?}: call the service on `peer`, on a linked peer
    the router picks, or (grenache: true) on a Grenache worker announced on Grape."""
    node = node_of(request)
    service = request.match_info["service"]
    body = await read_json_object(request)
    timeout = body_number(body, "timeout", None, 0.001, 300.0)
    peer = body.get("peer")
    if peer is not None and (not isinstance(peer, str) or not peer):
        raise ApiError(400, "invalid_field", "peer must be a node id", "peer")
    grenache = body.get("grenache", False)
    if not isinstance(grenache, bool) or (grenache and peer is not None):
        raise ApiError(400, "invalid_field", "grenache must be true or false (and not combined with peer)",
                       "grenache")
    rpc = node.rpc
    started = time.monotonic()
    try:
        if grenache:
            result, peer, attempts = await rpc.workers().call(service, body.get("payload"), timeout)
        elif peer is not None:
            peer = _resolve_peer(node, peer)
            result = await rpc.request_peer(peer, service, body.get("payload"), timeout)
            attempts = 1
        else:
            outcome = await rpc.call(service, body.get("payload"), timeout)
            result, peer, attempts = outcome.result, outcome.peer, outcome.attempts
    except e.RpcError as exc:
        return rpc_error_response(exc)
    body = {"service": service, "result": result, "peer": peer, "attempts": attempts,
            "latency_ms": round((time.monotonic() - started) * 1000.0, 3)}
    # Results come off msgpack: bytes and non-string map keys are legal there, not in JSON.
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=_jsonable),
                        content_type="application/json")


def _jsonable(value: object) -> Json:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _resolve_peer(node: ApiNode, prefix: str) -> str:
    """A full node id, or a unique prefix of a known one."""
    if len(prefix) == 40:
        return prefix
    matches = [n for n in node.peers.peers if n.startswith(prefix)]
    if len(matches) != 1:
        raise ApiError(400, "invalid_field", f"peer {prefix!r} matches {len(matches)} known nodes", "peer")
    return matches[0]


async def get_routing(request: web.Request) -> web.Response:
    node = node_of(request)
    snapshot = node.rpc.snapshot()
    router = node.router
    if router is not None:
        snapshot["message_paths"] = router.paths()
    return json_response(snapshot)


# --- debug endpoints ----------------------------------------------------------------------------
async def post_fault(request: web.Request) -> web.Response:
    """Body {"delay"?, "fail"?, "fail_delay"?, "capacity"?, "queue"?}: how test.echo misbehaves on this
    node from now on."""
    node = require_debug(request)
    body = await read_json_object(request)
    fault = FaultSpec(delay=body_number(body, "delay", 0.0, 0.0, 60.0), fail=body_number(body, "fail", 0.0, 0.0, 1.0),
                      fail_delay=body_number(body, "fail_delay", 0.0, 0.0, 60.0),
                      capacity=body_number(body, "capacity", 0.0, 0.0, 1e6), queue=body_number(body, "queue", 100.0, 0.0, 1e6))
    node.rpc.builtins.misbehave(fault)
    return json_response({"fault": fault.as_dict()})


async def post_hint(request: web.Request) -> web.Response:
    """Body {"subject", "status": "DEGRADED"|"HEALTHY", "service"?: "test.echo"}: broadcast one signed
    hint about a peer, whatever this node has seen of it (the false-gossip scenario)."""
    node = require_debug(request)
    body = await read_json_object(request)
    subject, status, service = body.get("subject"), body.get("status"), body.get("service", "test.echo")
    if not isinstance(subject, str) or len(subject) != 40:
        raise ApiError(400, "invalid_field", "subject must be a 40-character node id", "subject")
    if status not in STATUSES:
        raise ApiError(400, "invalid_field", f"status must be one of {', '.join(STATUSES)}", "status")
    if not isinstance(service, str) or not service:
        raise ApiError(400, "invalid_field", "service must be a service name", "service")
    gossip = node.rpc.gossip
    if gossip is None:
        raise ApiError(503, "unavailable", "this node gossips no hints (P2P off)")
    return json_response({"sent": gossip.send(service, {"subject": subject, "status": status})})


async def post_load(request: web.Request) -> web.Response:
    """Body {"service", "rate", "seconds", "payload"?, "timeout"?, "bucket"?}: send `rate` requests/s
    for `seconds` through the adaptive router; returns outcomes and, per time bucket, the attempts
    sent to each peer (from which tests read how traffic moved)."""
    node = require_debug(request)
    body = await read_json_object(request)
    service = body.get("service")
    if not isinstance(service, str) or not service:
        raise ApiError(400, "invalid_field", "service is required", "service")
    rate = body_number(body, "rate", 100.0, 0.1, MAX_LOAD_RATE)
    seconds = body_number(body, "seconds", 1.0, 0.01, MAX_LOAD_SECONDS)
    bucket = body_number(body, "bucket", 0.5, 0.05, 60.0)
    timeout = body_number(body, "timeout", None, 0.001, 60.0)
    return json_response(await run_load(node.rpc.service, service, body.get("payload"), rate, seconds, bucket,
                                        timeout))


async def run_load(rpc: RpcService, service: str, payload: object, rate: float, seconds: float, bucket: float,
                   timeout: float | None) -> JsonObject:
    """Steady open-loop load: one request every 1/rate s (not waiting for answers), bounded in time and
    count; slots missed while this process was held up are skipped (counted), not sent as a burst."""
    loop = asyncio.get_running_loop()
    counts = rpc.requests_by_peer.setdefault(service, {})
    errors: dict[str, int] = {}
    latencies: list[float] = []
    buckets: list[JsonObject] = []
    outcome = {"ok": 0, "failed": 0, "retried": 0}
    served: dict[str, int] = {}

    async def one() -> None:
        t0 = loop.time()
        try:
            result = await rpc.call(service, payload, timeout)
        except e.RpcError as exc:
            outcome["failed"] += 1
            errors[exc.code] = errors.get(exc.code, 0) + 1
            return
        outcome["ok"] += 1
        if result.attempts > 1:
            outcome["retried"] += 1
        served[result.peer] = served.get(result.peer, 0) + 1
        latencies.append(loop.time() - t0)

    start = loop.time()
    total = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()
    last = dict(counts)
    next_bucket = start + bucket
    interval = 1.0 / rate
    sent = skipped = 0
    for i in range(total):
        due = start + i * interval
        now = loop.time()
        while now >= next_bucket:
            buckets.append(_bucket_row(next_bucket - start, counts, last))
            next_bucket += bucket
        if now - due > 2 * interval:
            skipped += 1   # this process was held up: skip the missed slot rather than send a burst
            continue
        if due > now:
            await asyncio.sleep(due - now)
        task = loop.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    end = start + seconds
    if loop.time() < end:
        await asyncio.sleep(end - loop.time())
    while loop.time() >= next_bucket - 1e-9 and next_bucket <= end + 1e-9:
        buckets.append(_bucket_row(next_bucket - start, counts, last))
        next_bucket += bucket
    if tasks:
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "service": service, "planned": total, "sent": sent, "skipped": skipped, **outcome, "errors": errors, "served_by": served,
        "attempts_by_peer": {p: n for p, n in counts.items()},
        "latency_ms": {"p50": _pct(latencies, 0.5), "p99": _pct(latencies, 0.99)},
        "buckets": buckets,
    }


def _bucket_row(t: float, counts: dict[str, int], last: dict[str, int]) -> JsonObject:
    row = {p: n - last.get(p, 0) for p, n in counts.items() if n - last.get(p, 0)}
    last.clear()
    last.update(counts)
    return {"t": round(t, 3), "attempts": row}


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] * 1000.0, 3)


# --- metrics ------------------------------------------------------------------------------------
BREAKER_STATES = ("closed", "open", "half_open")
RPC_CALLS = CounterNames("exchange_node_rpc", "Routed RPC calls", skip=frozenset({"requests"}), groups=(
    CounterGroup("exchange_node_rpc_requests_total", "Routed RPC calls finished, by outcome", "outcome",
                 {"succeeded": "succeeded", "failed": "failed"}),
    CounterGroup("exchange_node_rpc_retries_total", "Retries wanted, by whether the retry budget allowed them",
                 "result", {"retries": "allowed", "retries_denied": "denied"}),
))
RPC_CLIENT = CounterNames("exchange_node_rpc_client", "RPC attempts sent", groups=(
    CounterGroup("exchange_node_rpc_client_responses_total", "RPC attempts sent, by how they ended", "outcome",
                 {"ok": "ok", "errors": "error", "timeouts": "timeout", "link_closed": "link_closed",
                  "cancelled": "cancelled"}),
), skip=frozenset({"in_flight"}))
RPC_SERVER = CounterNames("exchange_node_rpc_server", "RPC requests served", groups=(
    CounterGroup("exchange_node_rpc_served_total", "RPC requests received, by how they ended", "outcome",
                 {"answered": "answered", "errors": "error", "overloaded": "overloaded",
                  "unknown_service": "unknown_service", "cancelled": "cancelled", "expired": "expired"}),
), skip=frozenset({"in_flight", "served"}))
RPC_HINTS = CounterNames("exchange_node_rpc_hints", "Routing hints", groups=(
    CounterGroup("exchange_node_rpc_hints_handled_total", "Routing hints received, by what became of them",
                 "outcome", {"accepted": "accepted", "ignored": "ignored", "stale": "stale", "forged": "forged"}),
))
PEER_GAUGES = (  # (row key, metric, help, scale)
    ("score", "exchange_node_rpc_peer_score", "Routing cost per peer (lower is better)", 1.0),
    ("latency_ms", "exchange_node_rpc_peer_latency_seconds", "Latency estimate per peer (peak EWMA)", 0.001),
    ("error_rate", "exchange_node_rpc_peer_error_rate", "Windowed error rate per peer", 1.0),
    ("hint_multiplier", "exchange_node_rpc_peer_hint_multiplier", "Cost multiplier from gossip hints", 1.0),
    ("outstanding", "exchange_node_rpc_peer_outstanding", "Requests in flight per peer", 1.0),
)


def rpc_metric_families(node_rpc: NodeRpc) -> Iterator[Metric]:
    snap = node_rpc.snapshot()
    yield from split_counters(RPC_CALLS, snap["counters"])
    yield from split_counters(RPC_CLIENT, snap["client"])
    yield from split_counters(RPC_SERVER, snap["server"])
    yield GaugeMetricFamily("exchange_node_rpc_in_flight", "RPC requests in flight (ours)",
                            value=snap["client"]["in_flight"])
    yield GaugeMetricFamily("exchange_node_rpc_retry_budget", "Retries affordable right now",
                            value=snap["retry_budget"]["balance"])
    gauges = [(key, GaugeMetricFamily(name, text, labels=["service", "peer"]), scale)
              for key, name, text, scale in PEER_GAUGES]
    breaker = GaugeMetricFamily("exchange_node_rpc_peer_breaker", "Circuit breaker state per peer (1 = current)",
                                labels=["service", "peer", "state"])
    sent = CounterMetricFamily("exchange_node_rpc_peer_attempts", "Request attempts sent per peer",
                               labels=["service", "peer"])

    def add_rows(label: str, rows: Mapping[str, Mapping[str, object]]) -> None:
        for peer, row in rows.items():
            for key, family, scale in gauges:
                value = row.get(key)
                if isinstance(value, (int, float)):
                    family.add_metric([label, peer], value * scale)
            for state in BREAKER_STATES:
                breaker.add_metric([label, peer, state], 1.0 if row.get("breaker") == state else 0.0)
            attempts = row.get("requests_sent", 0)
            sent.add_metric([label, peer], attempts if isinstance(attempts, (int, float)) else 0)

    for service, data in snap["services"].items():
        add_rows(service, data["peers"])
    grenache = snap.get("grenache")
    workers = grenache["workers"] if grenache is not None else None
    for name, served in (workers["services"] if workers is not None else {}).items():
        add_rows(f"grenache:{name}", served["peers"])
    yield from (family for _, family, _ in gauges)
    yield breaker
    yield sent
    routers = sorted(node_rpc.service.routers.items())
    if node_rpc.grenache is not None:
        routers += sorted((f"grenache:{name}", router) for name, router in node_rpc.grenache.routers.items())
    yield histogram_family("exchange_node_rpc_attempt_duration_seconds",
                           "RPC attempt latency as the adaptive router saw it, by service and outcome",
                           ("service", "outcome"),
                           [((service, outcome), histogram)
                            for service, router in routers for outcome, histogram in router.latency.items()])
    yield labelled_counter("exchange_node_rpc_breaker_transitions_total", "Breaker transitions, by new state",
                           "to", node_rpc.service.transition_count)
    if node_rpc.endpoint is not None:
        yield labelled_counter("exchange_node_grenache_endpoint_refused_total",
                               "Requests and connections the Grenache RPC endpoint refused or closed over a client's "
                               "share, by reason", "reason", node_rpc.endpoint.limits.refused_counts())
    gossip = snap.get("hints")
    if isinstance(gossip, dict):
        yield from split_counters(RPC_HINTS, gossip.get("counters", {}))
