"""Zero configuration on a namespace LAN: nodes with nothing set (mDNS on, default port, default
FOUND_AFTER and MAX_VALIDATORS; only the control API is bound to the LAN address with a token so the
test can reach it) form one network with one validator set; seats are granted, never taken.

- started together: one chain founded jointly (the smallest id founds it with every node it saw with no
  chain as a first validator: 4 seats, a fault tolerated), orders final everywhere;
- started alone, then four others later with the founder's join token: the lone node founds; the later
  ones adopt its chain and are promoted, through one membership transaction in the chain itself, to
  the next size the seat rule allows (1 -> 4; a fifth seat would tolerate no more faults, so the fifth
  node waits as a standby), and every node's orders are final;
- (soak: absence is judged over 100 blocks and 60 s) a validator killed for good is jailed through the
  log and the standby takes its seat.
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
    wait_for(lambda: _one_network(nodes, 4), 60, "4 nodes on one chain founded jointly, 4 validators", nodes)
    formed = time.monotonic() - started
    founders = [n for n in nodes if "founded a new network" in n.log_tail(4000)]
    assert len(founders) == 1 and founders[0].node_id == min(n.node_id for n in nodes), [n.name for n in founders]
    assert {n.status()["role"] for n in nodes} == {"validator"}
    assert {n.status()["trust"] for n in nodes if n is not founders[0]} == {"joint_founding"}
    history = History()
    clients = [history.client(n) for n in nodes]
    for client in clients:
        status, body = client.post_order({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "10",
                                          "qty": "1"}, wait=5)
        assert status == 201, body
    settled(history, clients, nodes)
    print(f"\n[{load_line()}] 4 nodes, nothing configured: one network founded jointly, 4 validators, "
          f"{formed:.2f}s after all were up (FOUND_AFTER 3 s)")


def _founder_then_four(lan, tmp_path) -> tuple[list, float]:
    """A node alone founds, then 4 more start with its join token; returns them all once 4 of them are
    validators (the seat rule's next size), and how long the promotion took."""
    founder = lan.node(tmp_path, 0, **NOTHING)
    founder.start()
    wait_for(lambda: founder.status()["chain_id"] and founder.status()["quorum"], 30, "a lone node founds",
             [founder])
    assert founder.status()["validators"] == [founder.node_id]
    later = [lan.node(tmp_path, i, **NOTHING, join_token=founder.join_token()) for i in range(1, 5)]
    for node in later:
        node.start(wait=False)
    for node in later:
        node.wait_ready(30)
    nodes = [founder, *later]
    started = time.monotonic()
    wait_for(lambda: _one_network(nodes, 4), 60, "5 nodes on one chain with 4 validators", nodes)
    return nodes, time.monotonic() - started


def test_a_lone_founder_and_later_nodes_with_its_token_promoted_to_the_next_size(lan, tmp_path):
    nodes, promoted = _founder_then_four(lan, tmp_path)
    founder = nodes[0]
    views = {n.name: n.status() for n in nodes}
    chain = views[founder.name]["chain_id"]
    assert all(v["chain_id"] == chain for v in views.values()), snapshot(nodes)
    roles = sorted(v["role"] for v in views.values())
    assert roles == ["follower", "validator", "validator", "validator", "validator"], snapshot(nodes)
    assert views[founder.name]["epoch"] == 1            # one promotion of three standbys: one certified change
    # the fifth node's seat request may still be on its way to a block when the fourth seat is filled
    wait_for(lambda: founder.status()["standby"] == 1, 20, "the fifth node waits as the one standby", nodes)
    assert founder.status()["epoch"] == 1
    history = History()
    clients = [history.client(n) for n in nodes]
    for client in clients:
        status, body = client.post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                          "price": "500", "qty": "1"}, wait=5)
        assert status == 201, body
    settled(history, clients, nodes)
    print(f"\n[{load_line()}] lone founder + 4 later nodes with its token: 4 validators (epoch 1) and 1 "
          f"standby {promoted:.2f}s after the later nodes were up")


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_a_dead_validator_is_removed_and_a_follower_takes_its_seat(lan, tmp_path):
    # 4 seats (quorum 3): the 3 left still have a quorum to certify the removal (with 3 seats, quorum 3,
    # one dead validator halts the chain until it returns, safely)
    nodes, _ = _founder_then_four(lan, tmp_path)
    founder = nodes[0]
    before = founder.status()
    dead = next(n for n in nodes[1:] if n.node_id in before["validators"])
    dead.kill()
    alive = [n for n in nodes if n is not dead]
    killed = time.monotonic()
    wait_for(lambda: _one_network(alive, 4) and dead.node_id not in founder.status()["validators"], 120,
             "the dead validator jailed and the standby in its seat", alive)
    replaced = time.monotonic() - killed
    after = founder.status()
    assert after["epoch"] == before["epoch"] + 1, (before["epoch"], after["epoch"])   # jailed, standby in its seat
    history = History()
    clients = [history.client(n) for n in alive]
    status, body = clients[-1].post_order({"market": "BTC-USD", "side": "buy", "type": "limit", "price": "10",
                                           "qty": "1"}, wait=5)
    assert status == 201, body
    settled(history, clients, alive)
    print(f"\n[{load_line()}] a validator killed for good: jailed and replaced by the standby "
          f"{replaced:.1f}s later (absence: 100 blocks and 60 s)")
