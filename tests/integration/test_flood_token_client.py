"""Real processes: a client holding a validator's token floods that validator's own API from ten of its accounts
with 250-order refills and cancel-alls, while a trader at a follower places one order every 200 ms.

The validator's own API is metered like any other entry point, on block time: each account (ACCOUNT_OPS_RATE)
and the API's accounts together as one group (GROUP_OPS_RATE), refused before anything is signed or written.
Counted in blocks only, the limits grew with block speed and never bound: a client of another node went p50 x27
and every validator kept +150-176 MB.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.flood import HonestClient, p99, quantile, rss_mb
from tests.harness import NodeProcess, converged, wait_until

FAST = {"heartbeat_interval": 0.2}
ACCOUNTS = 10
ROUNDS = 1_000              # refills and cancel-alls per account at most; the flood stops after FLOOD_SECONDS
FLOOD_SECONDS = 6.0
RSS_GROWTH_MB = 15          # the admitted part of the flood and the honest orders, at each node (measured 1-9)


async def _flood(node: NodeProcess, names: list[str]) -> dict[int, int]:
    """Each account refills 250 orders and cancels them all, as fast as the API answers; the answers by status."""
    answers: dict[int, int] = {}
    deadline = time.monotonic() + FLOOD_SECONDS
    headers = node.auth_headers()

    async def account(session: aiohttp.ClientSession, name: str) -> None:
        orders = [{"market": "BTC-USD", "side": "buy", "price": str(40 + n % 10), "qty": "0.01"} for n in range(250)]
        for _ in range(ROUNDS):
            for path, body in (("/orders/batch", {"orders": orders, "account": name}),
                               ("/orders/cancel-all?wait=0", {"account": name})):
                if time.monotonic() > deadline:
                    return
                async with session.post(node.api_url + path, json=body, headers=headers) as response:
                    await response.read()
                    answers[response.status] = answers.get(response.status, 0) + 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(account(session, name) for name in names))
    return answers


def test_a_token_holders_ten_accounts_at_a_validators_own_api_cannot_slow_a_followers_client(cluster):
    (validator,) = cluster.chain(1, **FAST)
    follower = cluster.node("follower", role="follower", bootstrap_peers=validator.p2p_address, **FAST)
    wait_until(lambda: converged([validator, follower]), 20)
    names = [f"flood{n}" for n in range(ACCOUNTS)]
    validator.new_accounts(*names)
    client = HonestClient(follower)
    client.start()
    nodes = (validator, follower)
    rss_before = [rss_mb(node) for node in nodes]
    try:
        wait_until(lambda: len(client.samples) >= 20, 30, interval=0.1, message="the honest baseline")
        flood_start = time.monotonic()
        answers = asyncio.run(_flood(validator, names))
        flood_end = time.monotonic()
        wait_until(lambda: any(sent >= flood_end for sent, _ in client.samples), 30, interval=0.1,
                   message="an honest order after the flood")
    finally:
        client.stop.set()
        client.join(40)
    base, during = client.window(0, flood_start), client.window(flood_start, flood_end)
    assert None not in base + during, f"honest orders not final: {client.samples}"
    rate = validator.status()["exchange"]["account_rate"]
    growth = [rss_mb(node) - before for node, before in zip(nodes, rss_before)]
    base_p99, during_p99 = p99(base), p99(during)       # type: ignore[arg-type]
    print(f"\nflood answers {answers}; refused {rate['refused_by']}; honest p50 "
          f"{quantile(base, 0.5) * 1000:.0f} -> {quantile(during, 0.5) * 1000:.0f} ms, p99 "    # type: ignore[arg-type]
          f"{base_p99 * 1000:.0f} -> {during_p99 * 1000:.0f} ms ({len(during)} orders); RSS growth "
          f"{[round(g) for g in growth]} MB")
    assert rate["refused_by"].get("group_time", 0) + rate["refused_by"].get("account_time", 0) > 0, rate
    # p99 of ~30 orders is their maximum, and the flooder shares two cores with both nodes: the median within 2x
    # (a floor of 100 ms), the maximum within 3x (a floor of half a second), as the other flood tests bound it.
    # Measured on a loaded machine: p50 31-35 -> 18-81 ms, p99 58-85 -> 39-303 ms; without the time budgets
    # p50 41 -> 189 ms, p99 83 -> 532 ms, and the validator +17 MB in the six seconds
    base_p50, during_p50 = quantile(base, 0.5), quantile(during, 0.5)   # type: ignore[arg-type]
    assert during_p50 <= max(2 * base_p50, 0.1), \
        f"honest p50 {during_p50 * 1000:.0f} ms during the flood vs {base_p50 * 1000:.0f} ms before"
    assert during_p99 <= max(3 * base_p99, 0.5), \
        f"honest p99 {during_p99 * 1000:.0f} ms during the flood vs {base_p99 * 1000:.0f} ms before"
    assert max(growth) <= RSS_GROWTH_MB, f"RSS grew by {[round(g) for g in growth]} MB (bound {RSS_GROWTH_MB} MB)"
