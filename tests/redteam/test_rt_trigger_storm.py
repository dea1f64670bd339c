"""Red team on trigger orders, on two real validators: what waiting triggers let one signature or one trade cost
every node's state machine, measured against an honest trader's latency in the same run.

- The cancel-all scan: one transaction of 250 ops (a stop order then a cancel-all, 125 times), each cancel-all of
  an account holding a trigger (in process it walked the whole table: 130 ms a transaction with 10,240 waiting,
  until the table indexed each account's triggers; 1 ms with 100,000 after).
- The storm: the stop orders (32 per fresh account, as many as the fresh accounts' budget admits in 5 s) at one
  price, fired by one trade of one lot, all placed in that block.
- A fresh account's stop expires with its resting orders after fresh_order_ttl (this was a finding: before the
  fix it waited for good, so fresh keys, 1,952-2,272 stops in 9.3-9.5 s through one node here, could fill the
  100,000-trigger table in minutes and keep it full).
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from exchange.app.txs import CancelAllOp, NewOrderOp, Op, SignedTx
from exchange.crypto import SigningKey
from tests.flood import rss_mb
from tests.harness import Cluster, converged, wait_until
from tests.redteam.rt_honest import Honest, post_signed, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ACCOUNTS, PER_ACCOUNT = 320, 32          # at most 10,240 waiting stop orders (the budget admits fewer)
SCANNERS = 8                             # fresh keys, one 250-op transaction each
SETUP_SECONDS = 5.0                      # how long the stops are sent for (fresh keys share a budget)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("rt-triggers"))
    try:
        yield cluster.chain(2, heartbeat_interval=0.2, seat_rule="any", markets="BTC-USD,ETH-USD")
    finally:
        cluster.close()


def _stop(market: str, trigger: str) -> NewOrderOp:
    return NewOrderOp.parse(market, "buy", "stop_market", None, "1", None, trigger=trigger)


def _scans(chain_id: str) -> list[SignedTx]:
    """SCANNERS fresh keys' transactions of 125 (a stop order, then a cancel-all of every market)."""
    ops: list[Op] = []
    for _ in range(125):
        ops += [_stop("ETH-USD", "10"), CancelAllOp.parse(None, None)]
    return [signed(chain_id, SigningKey(os.urandom(32)), ops) for _ in range(SCANNERS)]


def test_waiting_triggers_cost_an_honest_trader_at_most_twice_its_latency(pair):
    entry, other = pair
    chain_id = entry.status()["chain_id"]

    def post(txs: list[SignedTx], wait: float, retry_for: float = 4.0) -> list[int]:
        return asyncio.run(post_signed(entry, txs, wait, retry_for))

    def at_ten(key: SigningKey, side: str, qty: str) -> list[SignedTx]:
        return [signed(chain_id, key, [NewOrderOp.parse("BTC-USD", side, "limit", "10", qty, None)])]

    def every_stop(status: str) -> bool:
        return all(n.get(f"/orders/{admitted[-1].order_id(PER_ACCOUNT - 1)}")["order"]["status"] == status
                   for n in pair)

    rss_before = rss_mb(entry)
    with Honest(other) as honest:
        t1 = honest.baseline()
        # the control: the same scans while no trigger waits
        control = post(_scans(chain_id), wait=10).count(200)
        t2 = time.monotonic()
        stops = [signed(chain_id, SigningKey(os.urandom(32)), [_stop("BTC-USD", "10")] * PER_ACCOUNT)
                 for _ in range(ACCOUNTS)]
        admitted = [tx for tx, status in zip(stops, post(stops, wait=0, retry_for=SETUP_SECONDS)) if status == 200]
        assert admitted, "no stop order admitted"
        wait_until(lambda: every_stop("untriggered"), 30, message="the stops wait on both nodes")
        t3 = time.monotonic()
        scanned = post(_scans(chain_id), wait=10).count(200)     # each cancel-all of an account holding a trigger
        # the storm: one lot trades at 10 and every waiting stop fires in that block
        post(at_ten(SigningKey(os.urandom(32)), "sell", "20000"), wait=10)
        t5 = time.monotonic()
        post(at_ten(SigningKey(os.urandom(32)), "buy", "1"), wait=10)
        wait_until(lambda: every_stop("filled"), 30, message="every stop fired on both nodes")
        t6 = time.monotonic()
        time.sleep(1.0)
        t7 = time.monotonic()
    base, control_p99 = honest.p99(honest.started_at, t1), honest.p99(t1, t2)
    scan_p99, storm_p99 = honest.p99(t3, t5), honest.p99(t5, t7)
    rss_after = rss_mb(entry)
    report = (f"{len(admitted) * PER_ACCOUNT} stops from {len(admitted)} of {ACCOUNTS} fresh keys admitted in "
              f"{t3 - t2:.1f} s; 250-op scans applied: {control} of {SCANNERS} with no trigger waiting, {scanned} "
              f"with the stops waiting; honest p99 baseline {base:.3f} s, during the control scans "
              f"{control_p99:.3f} s, during the scans {scan_p99:.3f} s, during the storm {storm_p99:.3f} s "
              f"({t6 - t5:.2f} s from the trade to every stop filled); RSS {rss_before:.0f} -> {rss_after:.0f} MB; "
              f"honest orders failed {honest.failed}")
    print(report)
    wait_until(lambda: converged(list(pair)), 20, interval=0.2, message="one state on both nodes")
    assert honest.failed == 0, report     # bounds as the other red-team tests: 2x, not under half a second
    assert scan_p99 <= max(2 * base, 2 * control_p99, 0.5), report
    assert storm_p99 <= max(2 * base, 0.5), report
    assert rss_after - rss_before < 64, report


def test_a_fresh_accounts_stop_expires_as_its_resting_orders_do(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        (node,) = cluster.chain(1, fresh_order_ttl=2)
        chain_id = node.status()["chain_id"]
        fresh = signed(chain_id, SigningKey(os.urandom(32)), [NewOrderOp.parse("BTC-USD", "buy", "limit", "5", "1", None),
                                                           _stop("BTC-USD", "10")])
        assert asyncio.run(post_signed(node, [fresh], wait=5)) == [200]
        wait_until(lambda: node.get(f"/orders/{fresh.order_id(0)}")["order"]["status"] != "open", 15,
                   message="the fresh account's resting order expired")
        stop = node.get(f"/orders/{fresh.order_id(1)}")["order"]
        assert stop["status"] != "untriggered", f"its stop still waits: {stop}"
    finally:
        cluster.close()
