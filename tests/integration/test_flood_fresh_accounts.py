"""Real processes: fresh, unfunded accounts cannot grow every node's book and memory for good.

As filed, resting orders from fresh accounts were permanent: 5,000 orders a second of spam added ~2 MB/s to
every node's book, kept. An account holding nothing now rests an order at most FRESH_ORDER_TTL of block time
(a founding setting; short here so the test sees the plateau), so what free keys can keep on the book is their
admitted rate times the TTL, not their rate times the network's age.

A validator and a follower; a neighbour from a /24 of its own hands the validator signed one-order transactions,
each from a fresh account (as the flood benchmark's order rows do), at its neighbour budget (`PEER_TX_RATE`) for
FLOOD_SECONDS, three TTLs. Pass: the spam resting on the follower's book stops growing at about the TTL's worth
(it was the whole flood before), it is gone a TTL after the flood, and each node's RSS grows by at most a bound,
with no growth over the flood's last TTL (the plateau). The second test sends fresh accounts' IOC orders, which
never rest: they leave no closed-order record (every node kept one each before, up to 100,000), so memory stays
flat however many are applied.
"""
from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from config import Settings
from tests.flood import order_flood, rss_mb, spam_orders
from tests.harness import NodeProcess, converged, wait_until

pytestmark = [pytest.mark.timeout(120)]

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "debug_api": "false"}
TTL = 3.0                   # s of block time a fresh account's order may rest (FRESH_ORDER_TTL)
FLOOD_SECONDS = 3 * TTL
SOURCE = "127.0.20.1"       # the flooding neighbour's own /24
SPAM_QTY = Decimal("0.01")  # each spam order buys 0.01 at 1, a price nothing else uses
# RSS growth per node: the TTL's worth of resting orders (at most ~1,000 here, a few KB each with their indexes and
# the closed-order records of those that expired: 3.2 KB per order per node, measured) plus 16 MB for the allocator
# and the flood's frames being read. Without the expiry the book kept all 1,800 and grew for as long as the flood went.
RSS_GROWTH_MB = 24
PLATEAU_MB = 6              # RSS growth over the flood's last TTL at either node


def _resting_spam(node: NodeProcess) -> int:
    book = node.get("/book/BTC-USD?depth=1000&digest=0")
    level = next((qty for price, qty in book["bids"] if Decimal(price) == 1), "0")
    return int(Decimal(level) / SPAM_QTY)


class Sampler(threading.Thread):
    """Every 0.5 s: (time, resting spam at the follower, RSS of each node)."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        super().__init__(daemon=True)
        self.nodes, self.samples = nodes, []        # type: ignore[var-annotated]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append((time.monotonic(), _resting_spam(self.nodes[-1]), [rss_mb(n) for n in self.nodes]))


def _validator_and_follower(cluster: Any) -> tuple[NodeProcess, NodeProcess, str]:
    """A validator founding a chain with the fresh-account TTL, a follower in step with it, and the chain id."""
    (validator,) = cluster.chain(1, fresh_order_ttl=TTL, **FAST)
    follower = cluster.node("follower", role="follower", bootstrap_peers=validator.p2p_address, **FAST)
    wait_until(lambda: converged([validator, follower]), 20)
    return validator, follower, validator.status()["chain_id"]


def test_fresh_accounts_resting_orders_expire_and_their_memory_plateaus(cluster):
    validator, follower, chain_id = _validator_and_follower(cluster)
    nodes = [validator, follower]
    rate = Settings().peer_tx_rate
    spam = spam_orders(chain_id, int(rate * FLOOD_SECONDS))
    rss_before = [rss_mb(node) for node in nodes]
    sampler = Sampler(nodes)
    sampler.start()
    try:
        start = time.monotonic()
        asyncio.run(order_flood([validator], chain_id, spam, rate, SOURCE))
        end = time.monotonic()
        wait_until(lambda: _resting_spam(follower) == 0, 4 * TTL, 0.2, "the spam expired from the follower's book")
    finally:
        sampler.stop.set()
        sampler.join(10)
    during = [(at, resting, rss) for at, resting, rss in sampler.samples if start <= at <= end]
    peak = max(resting for _, resting, _ in during)
    growth = [max(rss[i] for _, _, rss in sampler.samples) - before for i, before in enumerate(rss_before)]
    tail = [(at, rss) for at, _, rss in during if at >= end - TTL]
    plateau = [max(rss[i] for _, rss in tail) - tail[0][1][i] for i in range(len(nodes))]
    print(f"\n{len(spam)} fresh-account orders in {end - start:.1f} s; resting spam peak {peak} "
          f"(TTL's worth {rate * TTL:.0f}); RSS growth {[round(g, 1) for g in growth]} MB, over the last TTL "
          f"{[round(p, 1) for p in plateau]} MB")
    assert peak > 0, "no spam order rested: the flood measured nothing"
    # what rests is the TTL's worth of the admitted rate (a block's lateness either side), not the whole flood
    assert peak <= rate * (TTL + 1.5) < len(spam), (peak, rate * TTL, len(spam))
    assert max(growth) <= RSS_GROWTH_MB, f"RSS grew by {growth} MB (bound {RSS_GROWTH_MB})"
    assert max(plateau) <= PLATEAU_MB, f"RSS still growing over the flood's last TTL: {plateau} MB"


IMMEDIATE = 99              # IOC orders in each spam transaction before its one resting order
IOC_SECONDS = 5.0
IOC_SOURCE = "127.0.21.1"
MIN_IMMEDIATE = 10_000      # immediate orders both nodes must apply for the run to measure anything
# RSS growth a node may show: IOC_SLACK_MB (the allocator, the frames read) and IOC_KB_EACH per IOC order applied.
# Kept in the closed-order history, as before, they cost 1.5 KB each (17,820 applied: +26.1 and +23.5 MB, load 5);
# kept out, what grows is a resting order's record per transaction (1 in 100 orders) and the replay window's ids
IOC_SLACK_MB = 8
IOC_KB_EACH = 0.4


def test_fresh_accounts_immediate_orders_leave_every_nodes_memory_flat(cluster):
    """A neighbour hands the validator transactions from fresh accounts of 99 IOC orders that find nothing and one
    resting order each, at its budget for IOC_SECONDS. The IOC orders close at once and, under the fresh-account
    rule, leave no closed-order record: each node's RSS grows by at most IOC_SLACK_MB and IOC_KB_EACH an order
    (about 1.5 KB an order while their records were kept) while both apply at least
    MIN_IMMEDIATE of them (how many: the share of the transactions whose resting order the follower knows)."""
    validator, follower, chain_id = _validator_and_follower(cluster)
    nodes = [validator, follower]
    rate = Settings().peer_tx_rate
    spam = spam_orders(chain_id, int(rate * IOC_SECONDS), immediate=IMMEDIATE)
    rss_before = [rss_mb(node) for node in nodes]
    sampler = Sampler(nodes)
    sampler.start()
    try:
        asyncio.run(order_flood([validator], chain_id, spam, rate, IOC_SOURCE))
        wait_until(lambda: converged(nodes), 30, 0.2, "the follower applied what the validator decided")
    finally:
        sampler.stop.set()
        sampler.join(10)
    sampled = spam[::10]
    known = sum(follower.api("GET", f"/orders/{tx.order_id(IMMEDIATE)}")[0] == 200 for tx in sampled)
    applied = IMMEDIATE * len(spam) * known // len(sampled)
    growth = [max([rss_mb(node)] + [rss[i] for _, _, rss in sampler.samples]) - before
              for i, (node, before) in enumerate(zip(nodes, rss_before))]
    print(f"\n{len(spam)} transactions of {IMMEDIATE} IOC orders from fresh accounts, about {applied:,} IOC orders applied "
          f"by each node ({known} of {len(sampled)} sampled known); RSS growth {[round(g, 1) for g in growth]} MB "
          f"(kept as before, about {applied * 1.5 / 1024:.0f} MB a node)")
    assert applied >= MIN_IMMEDIATE, f"only about {applied} IOC orders applied: the flood measured nothing"
    bound = IOC_SLACK_MB + applied * IOC_KB_EACH / 1024
    assert max(growth) <= bound, f"RSS grew by {growth} MB (bound {bound:.1f} MB for {applied:,} IOC orders)"
