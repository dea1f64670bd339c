"""Joint founding: no id, setting or timing makes a node the founder of the network of the nodes beside it.

A node with an id ground to sort first and MAX_VALIDATORS=1 used to found alone and be followed by every
honest node on its LAN, holding the only seat. Now the smallest id founds with every chain-less node it sees
as a first validator, and a node with no trust anchor refuses a chain founded beside it without it."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace


from exchange.chain.seats.founding import Founding
from exchange.chain.seats.founding_loop import FoundingLoop
from exchange.chain.types.genesis import Genesis
from exchange.crypto import node_id_for

FOUND_AFTER = 3.0


class Node:
    def __init__(self, key: bytes) -> None:
        self.key = key
        self.id = node_id_for(key)


def _ground(n: int) -> tuple[Node, list[Node]]:
    """An attacker whose id sorts below `n` honest nodes' (a ground id), and the honest nodes, smallest first."""
    nodes = sorted((Node(os.urandom(32)) for _ in range(n + 1)), key=lambda node: node.id)
    return nodes[0], nodes[1:]


def _founding(me: Node, **kw: object) -> Founding:
    return Founding(me.id, me.key, found_after=FOUND_AFTER, started=0.0, **kw)  # type: ignore[arg-type]


def _sees(founding: Founding, nodes: list[Node], now: float, chain: str | None = None) -> None:
    for node in nodes:
        if node.id != founding.node_id:
            founding.observe(node.id, node.key, chain, 0, now)


def test_a_ground_id_with_one_seat_founds_only_its_own_network():
    attacker, honest = _ground(4)
    everyone = [attacker, *honest]
    rogue = _founding(attacker)
    rogue.max_seats = 1                 # MAX_VALIDATORS=1: its own genesis lists itself alone
    _sees(rogue, everyone, 1.0)
    found = rogue.decide(FOUND_AFTER)
    assert (found.action, found.validators) == ("found", [attacker.key])
    rogue_chain = "ab" * 32

    views = {node.id: _founding(node) for node in honest}
    for founding in views.values():
        _sees(founding, everyone, 1.0)                       # all five chain-less within the listening window
        assert founding.decide(FOUND_AFTER).action == "wait"     # the attacker's id is smallest: it founds
        _sees(founding, [attacker], FOUND_AFTER + 0.1, rogue_chain)
        adopt = founding.decide(FOUND_AFTER + 0.2)
        assert (adopt.action, adopt.chain_id) == ("adopt", rogue_chain)
        verdict = founding.judge(rogue_chain, attacker.key, [attacker.key], FOUND_AFTER + 0.3)
        assert verdict.action == "refuse" and attacker.id[:12] in verdict.reason, verdict
        assert rogue_chain in founding.refused
    # the honest four found among themselves: the smallest honest id, with all four as validators
    first = views[honest[0].id].decide(FOUND_AFTER + 0.4)
    assert first.action == "found" and sorted(first.validators) == sorted(n.key for n in honest), first
    assert attacker.key not in first.validators
    assert all(views[n.id].decide(FOUND_AFTER + 0.4).action == "wait" for n in honest[1:])
    joint_chain = "cd" * 32
    for node in honest[1:]:
        founding = views[node.id]
        _sees(founding, [honest[0]], FOUND_AFTER + 0.5, joint_chain)
        # two chains in sight, one refused: the other is judged and adopted as ours
        adopt = founding.decide(FOUND_AFTER + 0.6)
        assert adopt.chain_id == joint_chain, adopt
        verdict = founding.judge(joint_chain, honest[0].key, first.validators, FOUND_AFTER + 0.7)
        assert (verdict.action, verdict.joint) == ("adopt", True), verdict


def test_chains_founded_beside_us_are_judged_before_two_chains_make_us_wait():
    attacker, honest = _ground(2)
    me, other = honest
    founding = _founding(me)
    _sees(founding, [attacker, other], 1.0)
    rogue, joint = "aa" * 32, "bb" * 32
    founding.observe(attacker.id, attacker.key, rogue, 0, 4.0)
    founding.observe(other.id, other.key, joint, 0, 4.0)
    inspect = founding.decide(4.1)
    assert (inspect.action, inspect.chain_id, inspect.peers) == ("inspect", rogue, [attacker.id])
    assert founding.judge(rogue, attacker.key, [attacker.key], 4.2).action == "refuse"
    adopt = founding.decide(4.3)          # one chain left: judged as its genesis is taken
    assert (adopt.action, adopt.chain_id) == ("adopt", joint)
    assert founding.judge(joint, other.key, [other.key, me.key], 4.4).joint
    adopt = founding.decide(4.5)
    assert (adopt.action, adopt.chain_id, adopt.trust) == ("adopt", joint, "joint_founding")


def test_the_joint_set_is_every_chain_less_node_with_a_proven_key_capped_smallest_ids_first():
    me, *others = sorted((Node(os.urandom(32)) for _ in range(10)), key=lambda node: node.id)
    founding = _founding(me)
    _sees(founding, others[:8], 1.0)
    founding.observe(others[8].id, b"", None, 0, 1.0)          # a link still opening: key not proven yet
    assert founding.decide(FOUND_AFTER).action == "wait", "a chain-less peer's key is awaited a moment"
    founding.observe(others[8].id, others[8].key, None, 0, FOUND_AFTER + 0.1)
    found = founding.decide(FOUND_AFTER + 0.2)
    assert found.action == "found" and found.validators == [me.key, *(n.key for n in others[:6])], found
    founding.observe("11" * 20, os.urandom(32), "ee" * 32, 0, FOUND_AFTER + 0.2)    # peers on a chain: not seats
    assert len(founding.decide(FOUND_AFTER + 0.3).validators) <= 7

    alone = _founding(me)
    found = alone.decide(FOUND_AFTER)
    assert (found.action, found.validators) == ("found", [me.key]), "a node alone founds its own network"


def test_a_peer_that_never_proved_its_key_is_given_up_on():
    me, other = sorted((Node(os.urandom(32)) for _ in range(2)), key=lambda node: node.id)
    founding = _founding(me)
    for t in (1.0, 3.0, 5.0):
        founding.observe(other.id, b"", None, 0, t)       # hellos only, never a link
    assert founding.decide(FOUND_AFTER + 1.0).action == "wait"
    found = founding.decide(FOUND_AFTER + 2.1)
    assert (found.action, found.validators) == ("found", [me.key])


def test_what_a_node_with_no_anchor_accepts():
    founder, me, a, b, c, d, e = (Node(os.urandom(32)) for _ in range(7))
    chain = "cc" * 32
    # founded before we listened (the founder never seen chain-less): followed, as before
    founding = _founding(me)
    founding.observe(founder.id, founder.key, chain, 9, 1.0)
    verdict = founding.judge(chain, founder.key, [founder.key], 1.1)
    assert (verdict.action, verdict.joint) == ("adopt", False)
    # a hello naming a node chain-less proves nothing: not counted as seen
    founding = _founding(me)
    founding.observe(founder.id, b"", None, 0, 1.0)
    assert founding.judge(chain, founder.key, [founder.key], 1.1).action == "adopt"
    # seen chain-less beside us: a full set of nodes we heard is followed without us ...
    full = [founder, a, b, c, d, e, Node(os.urandom(32))]
    founding = _founding(me)
    _sees(founding, full, 1.0)
    assert founding.judge(chain, founder.key, [n.key for n in full], 4.0).action == "adopt"
    # ... but one listing keys nobody here heard is asked again, then refused
    founding = _founding(me)
    _sees(founding, full[:3], 1.0)
    assert founding.judge(chain, founder.key, [n.key for n in full], 4.0).action == "later"
    assert chain not in founding.refused
    verdict = founding.judge(chain, founder.key, [n.key for n in full], 4.0 + FOUND_AFTER)
    assert verdict.action == "refuse" and "no node here has heard" in verdict.reason
    # joint: lists us (and keys we heard)
    founding = _founding(me)
    _sees(founding, [founder, a], 1.0)
    verdict = founding.judge(chain, founder.key, [founder.key, a.key, me.key], 4.0)
    assert (verdict.action, verdict.joint) == ("adopt", True)


def test_anchored_and_pinned_nodes_are_unchanged():
    founder, me, other = sorted((Node(os.urandom(32)) for _ in range(3)), key=lambda node: node.id)
    chain = "dd" * 32
    trusted = _founding(me, trusted_chain=chain)
    _sees(trusted, [founder], 1.0)
    assert trusted.judge(chain, founder.key, [founder.key], 4.0).action == "adopt"
    # VALIDATORS: the smallest listed id founds with exactly the listed keys, whoever else is in sight
    pinned_ids = (founder.id, me.id)
    lead = _founding(founder, pinned=pinned_ids)
    _sees(lead, [me, other], 1.0)
    found = lead.decide(1.5)
    assert (found.action, found.validators, found.pinned) == ("found", [founder.key, me.key], True)
    follower = _founding(other, pinned=pinned_ids)
    _sees(follower, [founder, me], 1.0)
    assert follower.decide(1.5).action == "wait"
    _sees(follower, [founder], 2.0, chain)
    assert follower.decide(2.1).action == "adopt"
    assert follower.judge(chain, founder.key, [founder.key, me.key], 2.2).action == "adopt"


def test_two_chains_and_nothing_to_choose_by_are_named():
    me, a, b, c = (Node(os.urandom(32)) for _ in range(4))
    founding = _founding(me)
    one, two = "01" * 32, "02" * 32
    founding.observe(a.id, a.key, one, 5, 1.0)          # never seen chain-less: founded before we listened
    founding.observe(b.id, b.key, two, 5, 1.0)
    founding.observe(c.id, c.key, two, 5, 1.0)
    assert founding.decide(1.1).action == "inspect"
    founding.judge(one, a.key, [a.key], 1.2)
    assert founding.decide(1.3).action == "inspect"
    founding.judge(two, b.key, [b.key], 1.4)
    wait = founding.decide(1.5)
    assert wait.action == "wait" and founding.networks == [(two, 2), (one, 1)]
    assert one[:12] in wait.reason and two[:12] in wait.reason and "CHAIN_ID=" in wait.reason, wait.reason


class _Store:
    def __init__(self, root: Path) -> None:
        self.root = root / "chain"
        self.saved: list[Genesis] = []

    def save_genesis(self, genesis: Genesis) -> None:
        self.saved.append(genesis)


def _loop(founding: Founding, network: object, store: _Store, booted: list[Genesis],
          conflicts: dict[str, object]) -> FoundingLoop:
    host = SimpleNamespace(genesis=None, founding_status="", trust="founded", boot=booted.append,
                           note_conflict=lambda node, conflict: conflicts.__setitem__(node, conflict))
    rules = SimpleNamespace(problem_with=lambda g: None, max_validators=7, network_id="test-net",
                            markets="BTC-USD", order_ttl_ms=120_000, max_open_orders=None, fresh_order_ttl_ms=None,
                            snapshot_interval=500, snapshot_lag=0, snapshot_min_ms=0, seat_rule="bft", absent=(100, 60_000))
    return FoundingLoop(host, rules, founding, network, store, founding.public_key, lambda: 4.0)  # type: ignore[arg-type]


async def test_the_loop_refuses_a_chain_founded_without_us_loudly(tmp_path, caplog):
    attacker, honest = _ground(1)
    me = honest[0]
    rogue = Genesis("test-net", 3_000, attacker.key, (attacker.key,), max_validators=1)

    class Network:
        async def call(self, service: str, payload: object, timeout: float, peer: str | None = None) -> object:
            return rogue.wire()

        def penalize(self, node_id: str, points: float, reason: str) -> None:
            raise AssertionError(reason)

    founding = _founding(me)
    _sees(founding, [attacker], 1.0)
    _sees(founding, [attacker], 3.5, rogue.chain_id)
    booted: list[Genesis] = []
    conflicts: dict[str, object] = {}
    store = _Store(tmp_path)
    loop = _loop(founding, Network(), store, booted, conflicts)
    with caplog.at_level(logging.WARNING, "exchange.chain"):
        await loop._adopt(founding.decide(4.0))
    assert booted == [] and store.saved == [] and rogue.chain_id in founding.refused
    assert attacker.id in conflicts, conflicts
    assert any(attacker.id[:12] in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert founding.decide(4.0).action == "found"           # alone now: it founds its own network


def test_the_founder_writes_no_join_token(tmp_path, caplog):
    me = Node(os.urandom(32))
    booted: list[Genesis] = []
    store = _Store(tmp_path)
    founding = _founding(me)
    loop = _loop(founding, None, store, booted, {})
    with caplog.at_level(logging.WARNING, "exchange.chain"):
        loop._found_chain(founding.decide(FOUND_AFTER))
    assert [g.admission_key for g in booted] == [b""] and store.saved == booted
    assert not (tmp_path / "join-token").exists()
    assert "exchange-node validators token new" in caplog.text


def test_a_chain_whose_genesis_nobody_hands_over_does_not_keep_us_from_ours():
    me, other, stranger = (Node(os.urandom(32)) for _ in range(3))
    founding = _founding(me)
    _sees(founding, [other], 1.0)
    fake, joint = "00" * 32, "ff" * 32
    founding.observe(stranger.id, b"", fake, 1 << 40, 4.0)        # a hello naming a chain, never answering
    founding.observe(other.id, other.key, joint, 0, 4.0)
    inspect = founding.decide(4.1)
    assert (inspect.action, inspect.chain_id) == ("inspect", fake)
    founding.unanswered(fake, 7.1)
    inspect = founding.decide(7.2)
    assert (inspect.action, inspect.chain_id) == ("inspect", joint)
    founding.judge(joint, other.key, [other.key, me.key], 7.3)
    adopt = founding.decide(7.4)
    assert (adopt.action, adopt.chain_id, adopt.trust) == ("adopt", joint, "joint_founding")


def test_a_ground_id_that_never_founds_holds_founding_up_for_a_moment_only():
    staller, honest = _ground(2)
    me, other = honest
    founding = _founding(me)
    _sees(founding, [staller, other], 1.0)
    founding.observe("00" * 20, b"", None, 0, 1.0)        # a hello with the smallest id of all, never a link
    assert founding.decide(FOUND_AFTER + 2.5).action == "wait"
    _sees(founding, [staller, other], FOUND_AFTER + 4.0)
    founding.observe("00" * 20, b"", None, 0, FOUND_AFTER + 4.0)
    assert founding.decide(FOUND_AFTER + 4.9).action == "wait"
    found = founding.decide(FOUND_AFTER + 5.0)
    assert found.action == "found" and sorted(found.validators) == sorted([me.key, other.key, staller.key]), found
    second = _founding(other)
    _sees(second, [staller, me], FOUND_AFTER + 9.0)
    assert second.decide(FOUND_AFTER + 9.9).action == "wait", "two smaller ids: twice the grace"
    assert second.decide(FOUND_AFTER + 10.0).action == "found"


def test_two_networks_are_warned_about_once_a_minute(tmp_path, caplog):
    me = Node(os.urandom(32))
    founding = _founding(me)
    loop = _loop(founding, None, _Store(tmp_path), [], {})
    now = [10.0]
    loop.clock = lambda: now[0]
    founding.networks = [("01" * 32, 3), ("02" * 32, 1)]
    with caplog.at_level(logging.WARNING, "exchange.chain"):
        for step in range(0, 121, 1):       # two minutes of founding steps, one a second
            now[0] = 10.0 + step
            loop._warn_split()
    warned = [r.getMessage() for r in caplog.records if "not joining any network" in r.getMessage()]
    assert len(warned) == 3, warned         # at 0, 60 and 120 s
    assert "01" * 32 in warned[0] and "(3 peer(s))" in warned[0] and "CHAIN_ID=" in warned[0], warned[0]
    founding.networks = []
    now[0] += 61
    loop._warn_split()
    assert len([r for r in caplog.records if "not joining any network" in r.getMessage()]) == 3

