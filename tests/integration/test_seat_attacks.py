"""Real processes: the attacks on who holds a seat, each failing.

- Seat theft by isolation: one of four validators is paused until it is jailed for absence; two nodes of
  an attacker's wait with default settings; no seat and no standby goes to them, the paused validator
  gets its seat back when it resumes, and orders stay final throughout.
- Two chains on one LAN under one NETWORK_ID, the attacker's with more holders: a newcomer given the
  honest founder's join token or its CHAIN_ID joins the honest chain; one given nothing joins neither
  and says why.
- One Byzantine validator of four (a patched node: tests/integration/byzantine_node.py) seats a key only
  it holds in its proposals and equivocates its votes and proposals: no fork (the history checker reads
  every node's state hash at every height throughout), the chain keeps finalising, its conflicting votes
  become evidence and it is removed and banned.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from tests.harness import Cluster, NodeProcess, converged, wait_until
from exchange.crypto import node_id_for
from tests.integration.byzantine_node import GRABBED
from tests.history import Auditor, History
from tests.trading import Trader, run_traders, stop_traders

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _order_final(node: NodeProcess, price: str = "100") -> None:
    status, body = node.api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": "buy", "price": price,
                                                       "qty": "0.1"})
    assert status == 201 and body.get("final") is True, (status, body)


def test_seat_theft_by_isolation_gives_the_attacker_nothing(cluster: Cluster):
    validators = cluster.chain(4, absent_blocks=5, absent_seconds=3, **FAST)
    attackers = [cluster.node(f"attacker{i}", bootstrap_peers=validators[0].p2p_address, **FAST) for i in range(2)]
    wait_until(lambda: all(a.status()["chain_id"] == validators[0].status()["chain_id"] for a in attackers), 20)
    paused = validators[3]
    honest = validators[:3]
    attacker_ids = {a.node_id for a in attackers}
    # a validator the chain has seen signing: one paused before that would be a new member that never voted,
    # removed rather than jailed (its probation, exchange/chain/state/seats.py)
    wait_until(lambda: not any(m["on_probation"] for m in honest[0].get("/validators")["validators"]), 30,
               interval=0.2, message="every validator seen signing")
    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        def jailed() -> bool:
            seats = honest[0].get("/validators")
            members = {m["node_id"] for m in seats["validators"]}
            standby = {s["node_id"] for s in seats["standby"]}
            assert not attacker_ids & (members | standby), seats
            return paused.node_id not in members and paused.node_id in standby
        wait_until(jailed, 30, interval=0.2, message="the paused validator is jailed to standby")
        for _ in range(3):
            _order_final(honest[1])
    finally:
        paused.proc.send_signal(signal.SIGCONT)

    def back() -> bool:
        seats = honest[0].get("/validators")
        members = {m["node_id"] for m in seats["validators"]}
        assert not attacker_ids & (members | {s["node_id"] for s in seats["standby"]}), seats
        return members == {v.node_id for v in validators}
    wait_until(back, 30, interval=0.2, message="the validator that came back has its seat again")
    _order_final(paused)


def test_a_newcomer_trusts_the_chain_it_was_given_not_the_one_with_more_holders(cluster: Cluster):
    lan: dict[str, Any] = {"network_id": f"lan-{uuid.uuid4().hex[:12]}", "discovery_mdns": "true",
                           "mdns_interfaces": "127.0.0.1", **FAST}
    honest = cluster.node("honest", found_after=0, **lan)
    liar = cluster.node("liar", found_after=0, **lan)
    wait_until(lambda: honest.status()["chain_id"] and liar.status()["chain_id"], 10)
    honest_chain, liar_chain = honest.status()["chain_id"], liar.status()["chain_id"]
    assert honest_chain != liar_chain, "the two founders were meant to found apart"
    crowd = [cluster.node(f"liar{i}", join_token=liar.join_token(), **lan) for i in range(3)]
    wait_until(lambda: all(c.status()["chain_id"] == liar_chain for c in crowd), 20, message="the liar's crowd")
    by_token = cluster.node("by-token", join_token=honest.join_token(), **lan)
    by_chain_id = cluster.node("by-chain-id", chain_id=honest_chain, **lan)
    unsure = cluster.node("unsure", **lan)
    for newcomer in (by_token, by_chain_id):
        wait_until(lambda: newcomer.status()["chain_id"] == honest_chain, 20,
                   message=f"{newcomer.name} joins the chain it was given")
        _order_final(newcomer)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        status = unsure.status()
        assert status["chain_id"] is None, f"a node given nothing picked a chain: {status['chain_id']}"
        time.sleep(0.5)
    assert "networks with this NETWORK_ID" in unsure.status()["founding"], unsure.status()["founding"]


class PatchedNode(NodeProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.integration.byzantine_node", *super().command()[3:]]


def test_a_byzantine_validator_cannot_fork_seat_its_keys_or_stay(cluster: Cluster):
    founder = cluster.node("v0", found_after=0, **FAST)
    wait_until(lambda: founder.status()["chain_id"], 10)
    token = founder.join_token()
    honest = [founder] + [cluster.node(f"v{i}", join_token=token, bootstrap_peers=founder.p2p_address, **FAST)
                          for i in (1, 2)]
    follower = cluster.node("follower", bootstrap_peers=founder.p2p_address, **FAST)
    everyone = [*honest, follower]
    history = History()
    clients = [history.client(node) for node in everyone]
    for i, node in enumerate(honest):
        node.new_accounts(f"t{i}")
    auditor = Auditor(history, clients, markets=["BTC-USD"]).start()
    stop = threading.Event()
    traders = [Trader(client, [f"t{i}"], seed=i, stop=stop) for i, client in enumerate(clients[:3])]
    run_traders(traders)
    liar = PatchedNode(cluster.base, "liar", join_token=token, bootstrap_peers=founder.p2p_address, **FAST)
    liar.env_extra = {"BYZANTINE": "seat_grab,equivocate", "EQUIVOCATE_AFTER_BLOCKS": "40"}
    cluster.nodes.append(liar)
    liar.start()
    grabbed = node_id_for(GRABBED.public_key)

    def never_grabbed() -> None:
        for node in everyone:
            seats = node.get("/validators")
            held = {*(s["node_id"] for s in seats["standby"]), *(m["node_id"] for m in seats["validators"])}
            assert grabbed not in held, seats
    audited = []        # auditor passes that began after each phase: each phase was read while it lasted

    def audit_since_now(phase: str) -> None:
        begun = auditor.passes + 1      # the pass under way may have read before the phase
        wait_until(lambda: auditor.passes > begun, 60, interval=0.1, message=f"an audit pass after {phase}")
        audited.append(phase)
    try:
        wait_until(lambda: liar.node_id in founder.status()["validators"], 30, interval=0.1,
                   message="the liar (with the join token) is promoted with the three others")
        audit_since_now("the liar's promotion")
        wait_until(lambda: "refused: bad_membership" in founder.log_path.read_text(), 60, interval=0.3,
                   message="a proposal of the liar's that seats its own key is refused")
        never_grabbed()
        audit_since_now("the refused seat grab")
        wait_until(lambda: all(liar.node_id not in n.status()["validators"] for n in everyone), 90, interval=0.3,
                   message="the equivocating validator is removed")
        assert liar.node_id in founder.get("/validators")["banned"]
        never_grabbed()
        height = founder.status()["height"]
        wait_until(lambda: founder.status()["height"] >= height + 5, 20, message="still finalising after")
        _order_final(follower)
        audit_since_now("the removal")
    finally:
        stop_traders(traders, stop)
        auditor.stop()
    wait_until(lambda: converged(everyone), 30, interval=0.3)
    history.settle(clients, markets=["BTC-USD"])
    history.assert_clean()
    assert len(audited) == 3, audited


LATE_RUN = float(os.environ.get("LATE_VALIDATOR_SECONDS", "20"))


@pytest.mark.timeout(LATE_RUN + 240)
def test_a_validator_whose_messages_arrive_100ms_late_keeps_its_seat_and_proposes_its_share(cluster: Cluster):
    """20 s in the default suite (a few hundred blocks: enough to see its share); five minutes in `make soak`."""
    _late_validator_run(cluster, LATE_RUN)


@pytest.mark.soak
@pytest.mark.timeout(300 + 240)
def test_a_validator_100ms_late_keeps_its_seat_for_five_minutes(cluster: Cluster):
    _late_validator_run(cluster, 300.0)


def _late_validator_run(cluster: Cluster, seconds: float) -> None:
    founder = cluster.node("v0", found_after=0, **FAST)
    wait_until(lambda: founder.status()["chain_id"], 10)
    token = founder.join_token()
    honest = [founder] + [cluster.node(f"v{i}", join_token=token, bootstrap_peers=founder.p2p_address, **FAST)
                          for i in (1, 2)]
    late = PatchedNode(cluster.base, "late", join_token=token, bootstrap_peers=founder.p2p_address, **FAST)
    late.env_extra = {"BYZANTINE": "late", "LATE_SECONDS": "0.1"}
    cluster.nodes.append(late)
    late.start()
    members = {*(h.node_id for h in honest), late.node_id}
    wait_until(lambda: set(founder.status()["validators"]) == members, 30, interval=0.2, message="four validators")
    history = History()
    clients = [history.client(node) for node in honest]
    stop = threading.Event()
    for i, node in enumerate(honest):
        node.new_accounts(f"t{i}")
    traders = [Trader(client, [f"t{i}"], seed=i, stop=stop, wait=2.0) for i, client in enumerate(clients)]
    run_traders(traders)
    start, checks = time.monotonic(), 0
    try:
        while time.monotonic() - start < seconds:
            assert set(founder.status()["validators"]) == members, "a validator left the set"
            checks += 1
            stop.wait(2.0)
    finally:
        stop_traders(traders, stop)
    seats = founder.get("/validators")
    proposed = {m["node_id"]: m["proposed"] for m in seats["validators"]}
    total = sum(proposed.values())
    print(f"\n{seconds:.0f}s, {total} blocks, proposed per validator: {proposed} (late: {late.node_id[:12]})")
    assert checks >= seconds / 3
    assert proposed[late.node_id] >= 0.6 * total / 4, f"the late validator proposed too few blocks: {proposed}"
    history.assert_clean()
