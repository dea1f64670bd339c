"""The storm demo's client side, run inside a node just (re)started: `count` requests that were
pending when it went down are released at once, and each is resubmitted until it is delivered or
the deadline passes. What happens to the far side then is up to the node's storm protection: with
it off, every failed request goes straight back out; with it on, the warm-up paces them, AIMD and
the breaker back off from a peer that rejects, the retry budget and client throttle cap retries,
and a request the protection covers waits a full-jitter backoff before it is resubmitted.

`POST /debug/rpc-backlog {"service", "count", "deadline"?, "timeout"?, "bucket"?}` (DEBUG_API) runs
it and answers with what was measured on this node: attempts sent per `bucket` seconds, peak and
first-second request rates, outcomes, latency (sent to answered, time held back locally excluded), breaker
transitions, the rate limits in force at the end, and when everything was delivered.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from node.api.base import ApiError, JsonObject, body_number, json_response, read_json_object, require_debug

if TYPE_CHECKING:
    from p2p.rpc.service import RpcService
from p2p.resilience.backoff import Backoff
from p2p.resilience.protection import ENFORCE
from p2p.rpc import errors as e

MAX_COUNT = 100_000


async def post_backlog(request: web.Request) -> web.Response:
    node = require_debug(request)
    body = await read_json_object(request)
    service = body.get("service")
    if not isinstance(service, str) or not service:
        raise ApiError(400, "invalid_field", "service is required", "service")
    count = int(body_number(body, "count", 2000, 1, MAX_COUNT))
    deadline = body_number(body, "deadline", 30.0, 0.1, 300.0)
    timeout = body_number(body, "timeout", 2.0, 0.01, 60.0)
    bucket = body_number(body, "bucket", 0.1, 0.01, 10.0)
    return json_response(await run_backlog(node.rpc.service, service, count, deadline=deadline,
                                           call_timeout=timeout, bucket=bucket))


async def run_backlog(rpc: RpcService, service: str, count: int, *, deadline: float, call_timeout: float,
                      bucket: float) -> JsonObject:
    loop = asyncio.get_running_loop()
    attempts = rpc.requests_by_peer.setdefault(service, {})
    first_attempts = sum(attempts.values())
    transitions_before = sum(rpc.transition_count.values())
    start = loop.time()
    samples: list[int] = []
    delivered_at: list[float] = []
    latencies: list[float] = []
    errors: dict[str, int] = {}
    calls = 0

    async def sample() -> None:
        while True:
            samples.append(sum(attempts.values()) - first_attempts)
            await asyncio.sleep(max(0.0, start + len(samples) * bucket - loop.time()))

    async def deliver(index: int) -> None:
        nonlocal calls
        backoff = Backoff(base=0.05, cap=2.0) if rpc.protection.covers() == ENFORCE else None
        while loop.time() - start < deadline:
            calls += 1
            try:
                result = await rpc.call(service, {"pending": index}, min(call_timeout, deadline))
            except e.RpcError as exc:
                errors[exc.code] = errors.get(exc.code, 0) + 1
                await asyncio.sleep(backoff.next_delay() if backoff is not None else 0)
                continue
            delivered_at.append(loop.time() - start)
            latencies.append(result.latency - result.waited)
            return

    sampler = loop.create_task(sample())
    try:
        await asyncio.gather(*(deliver(i) for i in range(count)))
    finally:
        sampler.cancel()
    samples.append(sum(attempts.values()) - first_attempts)
    per_bucket = [b - a for a, b in zip(samples, samples[1:])]
    window = max(1, round(1.0 / bucket))
    rates = [sum(per_bucket[i:i + window]) / (window * bucket) for i in range(max(1, len(per_bucket) - window + 1))]
    sent = samples[-1]
    return {
        "service": service, "pending": count, "delivered": len(delivered_at), "calls": calls, "attempts": sent,
        "failed_attempts": sent - len(delivered_at), "local_rejects": errors.get(e.THROTTLED, 0), "errors": errors,
        "error_rate": round((sent - len(delivered_at)) / sent, 4) if sent else None,
        "first_second_rate": round(sum(per_bucket[:window]) / (window * bucket), 1),
        "peak_rate": round(max(rates), 1),
        "latency_p50_ms": _percentile_ms(latencies, 0.50), "latency_p95_ms": _percentile_ms(latencies, 0.95),
        "all_delivered_s": round(max(delivered_at), 3) if len(delivered_at) == count else None,
        "breaker_transitions": sum(rpc.transition_count.values()) - transitions_before,
        "limits": _limits(rpc, service), "protection": rpc.protection.snapshot(),
        "bucket_s": bucket, "attempts_per_bucket": per_bucket,
    }


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0, 1)


def _limits(rpc: RpcService, service: str) -> JsonObject:
    """The rate limits in force now: warm-up rate, each peer's AIMD concurrency limit and breaker."""
    snapshot = rpc.snapshot()
    view = snapshot["services"].get(service)
    peers = view["peers"] if view is not None else {}
    return {"warmup_rate": snapshot["warmup"]["rate"],
            "throttle_reject_probability": snapshot["throttle"]["reject_probability"],
            "peers": {peer: {"concurrency_limit": row.get("concurrency_limit"), "breaker": row.get("breaker")}
                      for peer, row in peers.items()}}
