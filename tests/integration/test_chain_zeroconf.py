"""Zero configuration on a namespace LAN: nodes with nothing set (mDNS on, default port, default
FOUND_AFTER and MAX_VALIDATORS; only the control API is bound to the LAN address with a token so the
test can reach it) form one network with one validator set.

- started together: one chain, every node a validator (4 <= MAX_VALIDATORS = 7), orders final;
- started alone, then others later: the lone node founds; the later ones adopt its chain as followers
  and are promoted, through membership transactions in the chain itself, up to MAX_VALIDATORS (set to
  3 on the founder: the cap is part of its genesis), the rest stay followers and their orders are final;
- (soak: absent_ms is 30 s) a validator killed for good is removed as absent through the log and a
  follower takes its seat.
"""
from __future__ import annotations

import time

import pytest

from tests.history import History
from tests.integration.chain_nodes import load_line, settled, snapshot, wait_for
from tests.integration.netns import lan_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]
NOTHING = {"p2p_port": None, "found_after": None, "heartbeat_interval": None}   # the built-in defaults


@pytest.fixture
def lan():
    with lan_or_skip(5) as lan:
        yield lan


def _one_network(nodes, validators: int) -> bool:
    views = [n.status() for n in nodes]
    sets = {tuple(sorted(v["validators"])) for v in views}
    return (len({v["chain_id"] for v in views}) == 1 and views[0]["chain_id"] is not None and len(sets) == 1
            and len(sets.pop()) == validators and all(v["quorum"] for v in views))


def test_nodes_started_together_with_nothing_configured_form_one_network(lan, tmp_path):
    nodes = [lan.node(tmp_path, i, **NOTHING) for i in range(4)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(30)
    started = time.monotonic()
    wait_for(lambda: _one_network(nodes, 4), 60, "4 nodes on one chain, all 4 validators", nodes)
    formed = time.monotonic() - started
    assert {n.status()["role"] for n in nodes} == {"validator"}
    founders = [n for n in nodes if "founded a new network" in n.log_tail(4000)]
    assert len(founders) == 1, [n.name for n in founders]
    history = History()
    clients = [history.client(n) for n in nodes]
    for client in clients:
        status, body = client.post_order({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "10",
                                          "qty": "1"}, wait=5)
        assert status == 201, body
    settled(history, clients, nodes)
    print(f"\n[{load_line()}] 4 nodes, nothing configured: one network, 4 validators, {formed:.2f}s after all "
          f"were up (FOUND_AFTER 3 s)")


def _founder_then_four(lan, tmp_path, seats: int) -> tuple[list, float]:
    """A node alone founds (MAX_VALIDATORS = seats), then 4 more start; returns them all once `seats` of
    them are validators, and how long the promotions took."""
    founder = lan.node(tmp_path, 0, **NOTHING, max_validators=seats)
    founder.start()
    wait_for(lambda: founder.status()["chain_id"] and founder.status()["quorum"], 30, "a lone node founds",
             [founder])
    assert founder.status()["validators"] == [founder.node_id]
    later = [lan.node(tmp_path, i, **NOTHING) for i in range(1, 5)]
    for node in later:
        node.start(wait=False)
    for node in later:
        node.wait_ready(30)
    nodes = [founder, *later]
    started = time.monotonic()
    wait_for(lambda: _one_network(nodes, seats), 60, f"5 nodes on one chain with {seats} validators", nodes)
    return nodes, time.monotonic() - started


def test_a_lone_founder_and_later_nodes_promoted_up_to_max_validators(lan, tmp_path):
    nodes, promoted = _founder_then_four(lan, tmp_path, 3)
    founder = nodes[0]
    views = {n.name: n.status() for n in nodes}
    chain = views[founder.name]["chain_id"]
    assert all(v["chain_id"] == chain for v in views.values()), snapshot(nodes)
    roles = sorted(v["role"] for v in views.values())
    assert roles == ["follower", "follower", "validator", "validator", "validator"], snapshot(nodes)
    assert views[founder.name]["epoch"] == 2            # two joins, each one certified change of the set
    followers = [n for n in nodes if views[n.name]["role"] == "follower"]
    history = History()
    clients = [history.client(n) for n in nodes]
    for client in clients:
        if client.name in {f.name for f in followers}:
            status, body = client.post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                              "price": "500", "qty": "1"}, wait=5)
            assert status == 201 and body["role"] == "follower", body
    settled(history, clients, nodes)
    print(f"\n[{load_line()}] lone founder + 4 later nodes (MAX_VALIDATORS 3): 3 validators (epoch 2) and 2 "
          f"followers {promoted:.2f}s after the later nodes were up")


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_a_dead_validator_is_removed_and_a_follower_takes_its_seat(lan, tmp_path):
    # 4 seats (quorum 3): the 3 left still have a quorum to certify the removal (with 3 seats, quorum 3,
    # one dead validator halts the chain until it returns, safely)
    nodes, _ = _founder_then_four(lan, tmp_path, 4)
    founder = nodes[0]
    before = founder.status()
    dead = next(n for n in nodes[1:] if n.node_id in before["validators"])
    dead.kill()
    alive = [n for n in nodes if n is not dead]
    killed = time.monotonic()
    wait_for(lambda: _one_network(alive, 4) and dead.node_id not in founder.status()["validators"], 120,
             "the dead validator removed and the follower promoted", alive)
    replaced = time.monotonic() - killed
    after = founder.status()
    assert after["epoch"] == before["epoch"] + 2, (before["epoch"], after["epoch"])
    history = History()
    clients = [history.client(n) for n in alive]
    status, body = clients[-1].post_order({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "10",
                                           "qty": "1"}, wait=5)
    assert status == 201, body
    settled(history, clients, alive)
    print(f"\n[{load_line()}] a validator killed for good: removed and replaced by the follower "
          f"{replaced:.1f}s later (the genesis' absent_ms is 30 s)")
