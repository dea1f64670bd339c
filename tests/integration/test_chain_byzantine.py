"""A lying validator on real processes: three honest nodes and one validator whose key the test holds
(tests/byzantine.py), pinned together in VALIDATORS (n = 4, f = 1), under orders at the honest nodes and
with the history checker running throughout.

- silent but connected (links and heartbeats up, never a vote): the three others finalise at their pace;
- round poison within the bound (MAX_ROUND = 2^20): validly signed votes for rounds up to 10^6 and
  equivocating prevotes at the current round move nobody's round (the round skip needs f+1 = 2
  validators) and change nothing final; the equivocations are counted;
- round poison beyond the bound (2^40): refused at the edge (`malformed_vote`, 20 points each), the liar,
  not a relay, penalised and banned (100 points) by every honest node; no honest peer penalised.

And a peer that lies about its chain height (any peer: the height rides on heartbeats) must not keep a
caught-up node from its validator seat nor make `/ready` fail: a claim the peer cannot back with blocks
when asked stops counting (and costs it points).
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from exchange.chain.types.blocks import MAX_ROUND, PRECOMMIT, PREVOTE
from node.identity import NodeIdentity
from tests.byzantine import ByzantinePeer, identity_not_smallest
from tests.harness import Cluster, free_ports, wait_until
from tests.history import Auditor, History
from tests.integration.chain_nodes import load_line, node_ids, pinned_loopback, settled, wait_for
from tests.trading import Trader, run_traders, stop_traders

pytestmark = pytest.mark.timeout(240)
MARKETS = ["BTC-USD"]


def _rounds(nodes) -> list[int]:
    return [n.status()["exchange"]["consensus"]["round"] for n in nodes]


def _phase(nodes, seconds: float, blocks: int, message: str, during=None) -> int:
    """Run `during()` repeatedly (the attack) for at least `seconds` and `blocks` new heights at every node;
    returns the highest round any node was at meanwhile."""
    start = min(n.status()["height"] for n in nodes)
    until = time.monotonic() + seconds
    worst = 0

    def done() -> bool:
        nonlocal worst
        if during is not None:
            during()
        worst = max(worst, *_rounds(nodes))
        return min(n.status()["height"] for n in nodes) >= start + blocks and time.monotonic() >= until
    wait_until(done, seconds + 40, interval=0.1, message=message)
    return worst


def test_a_lying_validator_cannot_stall_or_move_rounds_and_is_banned_beyond_the_bound(cluster: Cluster):
    honest_ids = node_ids(cluster.base, ["v0", "v1", "v2"])
    liar = ByzantinePeer(identity_not_smallest(honest_ids))
    try:
        honest, _ = pinned_loopback(cluster, 3, outsiders=(liar.node_id,),
                                    on_started=lambda nodes: [liar.link(n.p2p_address) for n in nodes])
        assert liar.node_id in honest[0].status()["validators"]
        liar.announce(honest[0].status()["chain_id"], honest[0].status()["height"])
        history = History()
        clients = [history.client(n) for n in honest]
        stop = threading.Event()
        traders = [Trader(c, ["default"], seed=i, stop=stop) for i, c in enumerate(clients)]
        auditor = Auditor(history, clients, MARKETS, orders_per_pass=5).start()
        run_traders(traders)
        try:
            silent = _phase(honest, 4, 15, "the three finalise while the fourth is linked but silent")
            finals_silent = history.counts["final_answers"]
            assert finals_silent >= 10, history.summary()

            def poison() -> None:
                height = honest[0].status()["height"] + 1
                for round_ in (10**6, MAX_ROUND, 3):
                    liar.send_vote(PREVOTE, height, round_, None)
                    liar.send_vote(PRECOMMIT, height, round_, None)
                for _ in range(2):        # two different prevotes at one (height, round): equivocation
                    liar.send_vote(PREVOTE, height, 0, os.urandom(32))
            poisoned = _phase(honest, 4, 15, "the three finalise through the in-bound round poison", poison)
            assert poisoned <= 2, f"a round moved to {poisoned}"
            assert history.counts["final_answers"] > finals_silent
            assert liar.linked() == {n.node_id for n in honest}, liar.goodbyes   # in-bound lies are not malformed
            equivocations = sum(n.status()["exchange"]["consensus"]["equivocations"] for n in honest)
            assert equivocations > 0

            def beyond() -> bool:       # each refusal costs the author 20 points; 100 ban it
                liar.send_vote(PREVOTE, honest[0].status()["height"] + 1, 2**40, None)
                return len(liar.goodbyes) == 3
            wait_until(beyond, 15, interval=0.1, message="every honest node bans the liar")
            assert {reason for _, reason in liar.goodbyes} == {"banned"}, liar.goodbyes
            for node in honest:
                record = next(p for p in node.peers() if p["node_id"] == liar.node_id)
                assert record["status"] == "banned"
                assert not [p for p in node.peers() if p["node_id"] != liar.node_id and p["penalty"] > 0]
                assert "malformed_vote" in node.log_tail(3000)
            after = _phase(honest, 2, 10, "the three finalise after the ban")
        finally:
            stop_traders(traders, stop)
            auditor.stop()
        settled(history, clients, honest)
        print(f"\n[{load_line()}] a lying validator of 4: highest honest round {max(silent, poisoned, after)} "
              f"(silent, in-bound poison, after the ban); {equivocations} equivocations counted; "
              f"{history.summary()}")
    finally:
        liar.close()


def test_a_peer_lying_about_its_height_cannot_keep_nodes_from_a_seat_or_from_ready(cluster: Cluster):
    founder, = cluster.chain(1, heartbeat_interval=0.5, seat_rule="any")     # a second seat is allowed at once
    liar = ByzantinePeer(NodeIdentity.generate())      # any peer at all: no validator key needed
    try:
        liar.announce(founder.status()["chain_id"], founder.status()["height"] + 1000)
        liar.link(founder.p2p_address)
        port, = free_ports(1)
        joiner = cluster.node("n1", start=False, bootstrap_peers=founder.p2p_address, heartbeat_interval=0.5,
                              p2p_port=port, join_token=founder.join_token())
        joiner.start(wait=False)
        # linked before the joiner is on the chain (it even asks the liar for the genesis first)
        wait_until(lambda: liar.try_link(f"127.0.0.1:{port}"), 15, message="the liar links to the joiner")
        joiner.wait_ready()
        wait_for(lambda: joiner.status()["height"] >= founder.status()["height"] - 1, 20,
                 "the joiner is caught up with the real chain", [founder, joiner])
        wait_for(lambda: len(founder.status()["validators"]) == 2, 12,
                 "the caught-up joiner (with the join token) takes its seat", [founder, joiner])
        wait_for(lambda: all(node.api("GET", "/ready")[0] == 200 for node in (founder, joiner)), 10,
                 "both nodes ready", [founder, joiner])
    finally:
        liar.close()
