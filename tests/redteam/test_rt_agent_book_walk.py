"""Red team: what one agent transaction of market orders costs every node when its notional cap is judged by
walking the book, on a Byzantine validator (proposing as tests/integration/byzantine_node.py `smuggle` does) and a
follower, then on two honest validators.

The cap of a market order is judged by walking the book's other side for its size (`_book_notional`), to the
end when the size is larger than the book, and an over-cap operation is refused without taking anything: 250
of them walk the whole book 250 times and leave it as it was. The honest nodes cannot be made to take such a
transaction through their mempools (their check refuses it at its first operation), but a proposer can put it
in a block. Through honest validators the same walks are had with operations that pass the cap: the walk skips
the owner's own orders, so an owner resting one ask at the best price makes each of its agent's market buys walk
every other ask at the check and in the block, then cancel by self-trade on that ask, leaving the book as it was.
The honest trader's latency is measured before and during, on another node. The walk is now bounded
(`CAP_WALK_ORDERS` resting orders; an order too deep to price within it is refused as over its cap), and both
attacks must leave the honest trader within the usual bound.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.app.txs import ApproveAgentOp, NewOrderOp, SignedTx
from exchange.crypto import SigningKey
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.redteam.rt_honest import Honest, post_signed, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MAKERS, PER_MAKER = 40, 250          # 10,000 resting asks of 0.01
WALKERS = 3                          # smuggled agent transactions of 250 over-cap market buys
# building the book fast is the test's convenience, not the attacker's: the validator's own API admits it at once
QUICK_BOOK: dict[str, Any] = {"group_ops_rate": 100_000, "group_ops_burst": 100_000, "account_ops_rate": 100_000,
                              "account_ops_burst": 100_000, "account_ops_per_block": 100_000}


class SmugglingNode(NodeProcess):
    """A validator whose every proposal also holds the signed transactions in its SMUGGLE_FILE."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.integration.byzantine_node", *super().command()[3:]]


def _walkers(chain_id: str, agent: SigningKey, owner: SigningKey) -> list[SignedTx]:
    """WALKERS agent transactions of 250 market buys of more than any book holds, for `owner`."""
    buy = NewOrderOp.parse("BTC-USD", "buy", "market", None, "100000", None)
    return [signed(chain_id, agent, [buy] * 250, owner.public_key) for _ in range(WALKERS)]


def test_an_agents_over_cap_market_orders_cost_no_more_than_a_plain_transaction(tmp_path: Path):
    cluster = Cluster(tmp_path)
    try:
        smuggled = tmp_path / "smuggled.jsonl"
        proposer = SmugglingNode(cluster.base, "byz", found_after=0, markets="BTC-USD,ETH-USD",
                                 heartbeat_interval=0.2, **QUICK_BOOK)
        proposer.env_extra = {"BYZANTINE": "smuggle", "SMUGGLE_FILE": str(smuggled)}
        cluster.nodes.append(proposer)
        proposer.start()
        wait_until(lambda: proposer.status()["chain_id"], 10, message="the proposer founds its chain")
        follower = cluster.node("follower", bootstrap_peers=proposer.p2p_address, markets="BTC-USD,ETH-USD",
                                heartbeat_interval=0.2)
        chain_id = proposer.status()["chain_id"]
        makers = [signed(chain_id, SigningKey(os.urandom(32)),
                      [NewOrderOp.parse("BTC-USD", "sell", "limit", str(100 + i % 50), "0.01", None)
                       for i in range(PER_MAKER)]) for _ in range(MAKERS)]
        assert set(asyncio.run(post_signed(proposer, makers, wait=10))) == {200}
        owner, agent = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
        approve = signed(chain_id, owner, [ApproveAgentOp.parse(agent.public_key.hex(), "BTC-USD", "place", "1", None)])
        assert asyncio.run(post_signed(proposer, [approve], wait=10)) == [200]
        wait_until(lambda: converged([proposer, follower]), 30, interval=0.2, message="the follower holds the book")

        with Honest(follower) as honest:
            t1 = honest.baseline()
            walkers = _walkers(chain_id, agent, owner)
            tmp = smuggled.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(tx.as_json()) + "\n" for tx in walkers))
            tmp.replace(smuggled)

            def judged() -> bool:
                status, body = follower.api("GET", f"/orders/{walkers[-1].order_id(249)}")
                return status == 200 and body["order"]["status"] == "rejected"
            wait_until(judged, 60, message="the follower applied the smuggled block")
            t2 = time.monotonic()
            time.sleep(2.0)
            t3 = time.monotonic()
        base, during = honest.p99(honest.started_at, t1), honest.p99(t1, t3)
        reason = follower.get(f"/orders/{walkers[0].order_id(0)}")["order"]["reason"]
        report = (f"honest p99 on the follower {base:.3f} s before, {during:.3f} s with {WALKERS} smuggled 250-op "
                  f"over-cap transactions against {MAKERS * PER_MAKER} asks (applied {t2 - t1:.2f} s after they were "
                  f"handed to the proposer; refused {reason}); honest orders failed {honest.failed}")
        print(report)
        assert reason == "over_notional_cap", report
        assert during <= max(2 * base, 0.5), report
    finally:
        cluster.close()


def test_an_agent_walking_the_book_through_honest_validators_costs_them_no_more_than_a_plain_transaction(
        tmp_path: Path):
    cluster = Cluster(tmp_path)
    try:
        makers = [SigningKey(os.urandom(32)) for _ in range(MAKERS)]
        # the makers are the operators' own market makers here (not counted): the attacker gets the default rates
        exempt = ",".join(k.public_key.hex() for k in makers)
        entry, other = cluster.chain(2, heartbeat_interval=0.2, seat_rule="any", account_rate_exempt=exempt)
        chain_id = entry.status()["chain_id"]
        book = [signed(chain_id, key, [NewOrderOp.parse("BTC-USD", "sell", "limit", str(100 + i % 50), "0.01", None)
                                    for i in range(PER_MAKER)]) for key in makers]
        assert set(asyncio.run(post_signed(entry, book, wait=10))) == {200}
        owner, agent = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
        setup = signed(chain_id, owner, [ApproveAgentOp.parse(agent.public_key.hex(), "BTC-USD", "place", "1000000000",
                                                           None),
                                      NewOrderOp.parse("BTC-USD", "sell", "limit", "99", "0.01", None)])
        assert asyncio.run(post_signed(entry, [setup], wait=10)) == [200]
        wait_until(lambda: converged([entry, other]), 30, interval=0.2, message="both hold the book")

        with Honest(other) as honest:
            t1 = honest.baseline()
            statuses = asyncio.run(post_signed(entry, _walkers(chain_id, agent, owner), wait=30))
            t2 = time.monotonic()
            time.sleep(1.0)
            t3 = time.monotonic()
        base, during = honest.p99(honest.started_at, t1), honest.p99(t1, t3)
        left = len(other.get("/book/BTC-USD?depth=100000")["asks"]) if statuses else 0
        report = (f"honest p99 on the other validator {base:.3f} s before, {during:.3f} s while {WALKERS} agent "
                  f"transactions of 250 market buys were sent through the API (answered {statuses} in "
                  f"{t2 - t1:.2f} s); ask levels left {left}; honest orders failed {honest.failed}")
        print(report)
        assert during <= max(2 * base, 0.5), report
    finally:
        cluster.close()
