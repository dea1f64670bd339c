"""The choose -> send -> record -> retry loop shared by RPC over peer links and by Grenache workers.

One call: the AdaptiveRouter picks a peer among the candidates (peers already tried are excluded
while others remain), the attempt gets part of the remaining time (all of it on the last attempt),
its outcome is reported to the router, and a PEER failure is retried after the RetryPolicy's
full-jitter delay while the retry budget, `max_attempts` and the overall deadline allow. An
application answer (an error code that does not blame the peer) ends the call at once.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, NamedTuple, Sequence, TypeVar

from p2p.resilience.protection import ENFORCE
from p2p.rpc import errors as e
from p2p.rpc.router import AdaptiveRouter, RetryPolicy

ATTEMPT_SHARE = 0.6   # of the time left that an attempt may use when another one could follow

# classify(exception, peer) -> (failure kind or None for an application answer, the RpcError to raise)
Classify = Callable[[Exception, str], "tuple[str | None, e.RpcError]"]


Result = TypeVar("Result")


class Outcome(NamedTuple, Generic[Result]):
    result: Result              # what the attempt's `send` returned
    peer: str
    attempts: int
    finished: float       # clock time of the answer


def classify_rpc_error(exc: Exception, peer: str) -> tuple[str | None, e.RpcError]:
    if isinstance(exc, e.RpcError):
        return e.failure_kind(exc.code), exc
    raise exc


async def call_with_retries(router: AdaptiveRouter, candidates: Callable[[], Sequence[str]],
                            send: Callable[[str, float], Awaitable[Result]], *, retry: RetryPolicy,
                            clock: Callable[[], float], deadline: float, max_attempts: int,
                            classify: Classify = classify_rpc_error, busy: Callable[[str], bool] | None = None,
                            sent: dict[str, int] | None = None, counters: dict[str, int] | None = None,
                            what: str = "service", failed: tuple[str, str, e.RpcError] | None = None,
                            guard: str | None = ENFORCE) -> Outcome[Result]:
    """Run one routed call; `send(peer, timeout)` performs an attempt. Raises `RpcError`; an error
    that is an application answer has `answered = True` (the peer is fine).

    `failed` = (peer, kind, error): the caller already made the first attempt itself (its own fast
    path, with `retry.on_request()` called and the failure reported to the router); go on from there
    with the retry decision, exactly as if this loop had made that attempt. `guard` is the call's
    storm protection verdict (Protection.covers), for the retry budget and the router's choice."""
    counters = counters if counters is not None else {}
    tried: set[str] = set()
    pool = candidates()
    if failed is None:
        retry.on_request()
        attempt = 0
    else:
        attempt = 1
    while True:
        if failed is not None:
            failed_peer, kind, error = failed
            failed = None
            tried.add(failed_peer)
            delay = retry.next_retry_delay(attempt, kind, guard)
            if delay is None or clock() + delay >= deadline - 0.001:
                if delay is None and attempt < max_attempts:
                    counters["retries_denied"] = counters.get("retries_denied", 0) + 1
                error.attempts = attempt
                raise error
            counters["retries"] = counters.get("retries", 0) + 1
            if delay > 0:
                await asyncio.sleep(delay)
            pool = candidates() or pool
        now = clock()
        peer = router.choose(pool, now, tried, guard=guard) or router.choose(pool, now, guard=guard)
        if peer is None:   # with candidates: each at its AIMD limit or probed, so no retry now
            raise e.RpcError(e.THROTTLED if pool else e.NO_PEERS,
                             f"every provider of {what} is at its limit" if pool else f"nobody offers {what}",
                             attempts=attempt)
        attempt += 1
        left = deadline - now
        timeout = left if attempt >= max_attempts else left * ATTEMPT_SHARE
        if busy is not None and busy(peer):
            router.cancel(peer, now)
            kind, error = "rejected", e.RpcError(e.OVERLOADED, "local in-flight bound reached", peer=peer)
        else:
            router.on_start(peer, now)
            if sent is not None:
                sent[peer] = sent.get(peer, 0) + 1
            try:
                result = await send(peer, timeout)
            except asyncio.CancelledError:
                router.on_abandon(peer, clock())
                raise
            except Exception as exc:  # noqa: BLE001 - classify decides; unknown exceptions re-raise
                failure, error = classify(exc, peer)   # failure kind, or None for an answer
                done = clock()
                error.attempts = attempt
                if failure is None:                  # an application answer: the peer is fine
                    router.on_success(peer, done - now, done)
                    error.answered = True
                    raise error from None
                kind = failure
                router.on_failure(peer, kind, done - now, done)
            else:
                done = clock()
                router.on_success(peer, done - now, done)
                return Outcome(result, peer, attempt, done)
        # A peer failure: retry on another peer if the policy, the budget and the deadline allow
        # (at the top of the loop).
        failed = (peer, kind, error)
