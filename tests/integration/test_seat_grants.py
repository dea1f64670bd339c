"""Real processes: what the network grants a node, it can take back, and nothing granted counts twice.

- A join token admits as many nodes as it was issued for, until it expires or a validator revokes it (its
  waiting standbys then leave the list).
- A node the validators removed stays out when it restarts with the same token, until they approve it again.
- One token cannot fill the standby list: a holder asking seats for dozens of keys nobody runs gets at most
  its issuer's quota, and a node the validators approve is never refused for room.
- Signed approvals, joins, grants and leaves re-sent by a follower long after they counted are refused by
  every node, and the follower is penalised until banned; the validator whose old leave it replays keeps
  the seat it regained.
- Graceful stops never seat the leaver: two of four stopped 15 s apart, then two more 1 s apart after the
  first two came back and asked for their seats again, and the rest keep finalising throughout.
- Standbys that follow the chain but never vote once seated cannot turn two graceful stops into a halt: the
  second stop waits until the first's mute successor is removed (it never signed), and a seat goes to an
  unproven standby only while the rest keep a quorum without it.
- A standby that claims a height it does not have (2^62 in its heartbeats, `alive`s naming blocks that do
  not exist) is never chosen as a successor: a live honest standby is.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from tests.harness import Cluster, NodeProcess, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


class PatchedNode(NodeProcess):
    """A node running tests/integration/byzantine_node.py with BYZANTINE behaviours."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.integration.byzantine_node", *super().command()[3:]]


def _patched(cluster: Cluster, name: str, behaviours: str, **settings: Any) -> NodeProcess:
    node = PatchedNode(cluster.base, name, **settings)
    node.env_extra = {"BYZANTINE": behaviours, "REPLAY_SECONDS": "0.5"}
    cluster.nodes.append(node)
    node.start()
    return node


def _seats(node: NodeProcess) -> tuple[set[str], set[str]]:
    view = node.get("/validators")
    return {m["node_id"] for m in view["validators"]}, {s["node_id"] for s in view["standby"]}


def _token(node: NodeProcess, uses: int, ttl: str | int = "1h") -> dict:
    status, body = node.api("POST", "/validators/tokens", {"uses": uses, "ttl": ttl}, timeout=20)
    assert status == 201 and body["final"], (status, body)
    return body


def _order_final(node: NodeProcess, price: str = "100") -> None:
    status, body = node.api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": "buy", "price": price,
                                                       "qty": "0.1"})
    assert status == 201 and body.get("final") is True, (status, body)


def _stays(predicate: Any, seconds: float, message: str, interval: float = 0.5) -> None:
    """`predicate` holds at every look for `seconds` (what must not happen, watched while it could)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), message
        time.sleep(interval)


def test_a_token_admits_what_it_was_issued_for_until_it_expires_or_is_revoked(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    boot = {"bootstrap_peers": founder.p2p_address, **FAST}
    once = _token(founder, 1)
    first = cluster.node("first", join_token=once["token"], **boot)
    wait_until(lambda: first.node_id in _seats(founder)[1], 20, message="the one use admits the first node")
    second = cluster.node("second", join_token=once["token"], **boot)
    wait_until(lambda: "admits this node to no seat" in second.log_path.read_text(), 20,
               message="the second holder of a one-use token is told it is used up")
    assert "as many nodes as it was issued for" in second.log_path.read_text()
    short = _token(founder, 3, ttl=2)
    wait_until(lambda: {t["id"]: t for t in founder.get("/validators/tokens")["tokens"]}[short["id"]]["expired"], 20,
               message="two seconds of block time pass")
    late = cluster.node("late", join_token=short["token"], **boot)
    wait_until(lambda: "it expired" in late.log_path.read_text(), 20, message="a late holder is told it expired")
    revocable = _token(founder, 3)
    third = cluster.node("third", join_token=revocable["token"], **boot)
    wait_until(lambda: third.node_id in _seats(founder)[1], 20, message="a third node joins with the new token")
    done = founder.cli("validators", "token", "revoke", revocable["id"])
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: third.node_id not in _seats(founder)[1], 20,
               message="revoking a token takes its waiting standbys off the list")
    listed = {t["id"]: t for t in founder.get("/validators/tokens")["tokens"]}
    assert listed[revocable["id"]]["revoked"] is True and listed[once["id"]]["uses_left"] == 0, listed
    _stays(lambda: not ({second.node_id, late.node_id, third.node_id} & set().union(*_seats(founder))), 5,
           "a used-up, expired or revoked token admitted someone")
    for node in (second, late, third):
        assert node.status()["role"] == "follower"


def test_a_removed_node_stays_out_with_the_same_token_until_approved_again(cluster: Cluster):
    nodes = cluster.chain(4, **FAST)
    target = nodes[3]
    for validator in nodes[:3]:
        done = validator.cli("validators", "remove", target.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: target.node_id not in set().union(*_seats(nodes[0])), 20, message="three of four remove it")
    target.stop()
    target.start()          # the same key, the same JOIN_TOKEN (16 uses, most left)
    wait_until(lambda: "removed this node" in target.log_path.read_text(), 30,
               message="the removed node is told why its token admits it no more")
    _stays(lambda: target.node_id not in set().union(*_seats(nodes[0])), 8, "a removed node came back by token")
    _order_final(nodes[0])
    for validator in nodes[:3]:     # a quorum of the three left approves it again
        done = validator.cli("validators", "add", target.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: target.node_id in set().union(*_seats(nodes[0])), 30,
               message="approved again, it is a standby (and takes a seat when the rule allows)")


def test_one_token_cannot_fill_the_standby_list_and_an_approved_join_gets_in(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    leaked = _token(founder, 16)
    flooder = _patched(cluster, "flooder", "phantom_joins", join_token=leaked["token"],
                       bootstrap_peers=founder.p2p_address, **FAST)
    wait_until(lambda: len(_seats(founder)[1]) >= 8, 30, message="the leaked token's joins for keys nobody runs")
    _stays(lambda: len(_seats(founder)[1]) <= 8, 5, "one validator's tokens admitted more than its quota")
    assert flooder.node_id not in _seats(founder)[0]
    honest = cluster.node("honest", bootstrap_peers=founder.p2p_address, **FAST)
    wait_until(lambda: honest.node_id in founder.connected_ids(), 20)
    done = founder.cli("validators", "add", honest.node_id)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: honest.node_id in _seats(founder)[1], 20, message="the approved newcomer is a standby")
    _order_final(founder)


def test_replayed_approvals_and_leaves_are_refused_everywhere_and_their_relayer_banned(cluster: Cluster):
    nodes = cluster.chain(4, seat_rule="any", **FAST)
    removed, leaver = nodes[3], nodes[2]
    replayer = _patched(cluster, "replayer", "replay", bootstrap_peers=nodes[0].p2p_address, **FAST)
    wait_until(lambda: replayer.status()["height"] >= nodes[0].status()["height"] - 1, 20,
               message="the replayer follows the chain")
    for validator in nodes[:3]:
        done = validator.cli("validators", "remove", removed.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: removed.node_id not in set().union(*_seats(nodes[0])), 20, message="three of four remove it")
    leaver.stop()           # a graceful stop: its signed leave goes in a block, the replayer keeps it
    wait_until(lambda: leaver.node_id not in _seats(nodes[0])[0], 20, message="the leave is ordered")
    leaver.start()          # it asks back (`alive`) and, under seat_rule any, takes a seat again
    wait_until(lambda: leaver.node_id in _seats(nodes[0])[0], 30, message="the leaver regains a seat")
    honest = [nodes[0], nodes[1], leaver]
    members = {n.node_id for n in honest}

    def banned() -> bool:
        return any(p["node_id"] == replayer.node_id and p["status"] == "banned" for p in nodes[0].peers())
    deadline = time.monotonic() + 60
    while not banned():
        assert time.monotonic() < deadline, "the replayer was not banned: " + repr(
            [p for p in nodes[0].peers() if p["node_id"] == replayer.node_id])
        for node in honest:
            validators, standby = _seats(node)
            assert validators == members and removed.node_id not in standby, (node.name, validators, standby)
        _order_final(nodes[0])      # heights go on: old requests pass their grace and count as replays
    for node in honest:
        assert not [p for p in node.peers() if p["node_id"] != replayer.node_id and p["penalty"] > 0], node.peers()


def test_graceful_stops_never_seat_the_leaver_and_the_rest_keep_finalising(cluster: Cluster):
    nodes = cluster.chain(4, seat_rule="any", **FAST)
    first, second, rest = nodes[0], nodes[1], nodes[2:]
    assert first.stop() == 0
    wait_until(lambda: len(rest[0].status()["validators"]) == 3, 20, message="the first leave is ordered")
    _stays(lambda: first.node_id not in set().union(*_seats(rest[0])), 15,
           "the first leaver was put back on the list while it was gone")
    _order_final(rest[0])
    assert second.stop() == 0
    wait_until(lambda: set(rest[0].status()["validators"]) == {n.node_id for n in rest}, 20,
               message="the second leave leaves the two live validators")
    _order_final(rest[0])
    _order_final(rest[1])
    for node in (first, second):    # back, they ask for their seats again and get them (seat_rule any)
        node.start()
    wait_until(lambda: len(rest[0].status()["validators"]) == 4, 40, message="both asked back and were seated")
    everyone = [first, second, *rest]
    for node in everyone[:2]:       # now two stopped one second apart
        node.proc.send_signal(15)   # type: ignore[union-attr]
        time.sleep(1.0)
    assert all(node.proc.wait(15) == 0 for node in everyone[:2])  # type: ignore[union-attr]
    wait_until(lambda: set(rest[0].status()["validators"]) == {n.node_id for n in rest}, 20,
               message="both leaves ordered: the two live validators remain")
    for node in rest:
        _order_final(node)
        status, body = node.api("GET", "/ready")
        assert status == 200, (status, body)


def test_a_standby_claiming_a_height_it_does_not_have_is_not_chosen(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    token = founder.join_token()
    boot = {"join_token": token, "bootstrap_peers": founder.p2p_address, **FAST}
    validators = [founder, *(cluster.node(f"v{i}", **boot) for i in (1, 2, 3))]
    wait_until(lambda: len(founder.status()["validators"]) == 4, 30, message="four validators")
    liar = _patched(cluster, "liar", "height_liar", **boot)
    wait_until(lambda: liar.node_id in _seats(founder)[1], 20, message="the liar is a standby (its token is good)")
    honest = cluster.node("honest", **boot)
    wait_until(lambda: any(s["node_id"] == honest.node_id and s["live"]
                           for s in founder.get("/validators")["standby"]), 30,
               message="the honest standby's alive is ordered")
    standby = {s["node_id"]: s for s in founder.get("/validators")["standby"]}
    assert not standby[liar.node_id]["live"], standby
    assert validators[3].stop() == 0
    wait_until(lambda: honest.node_id in _seats(founder)[0], 20, message="the honest standby takes the seat")
    assert liar.node_id not in _seats(founder)[0]
    _order_final(founder)


def test_two_stops_never_leave_a_set_of_four_to_members_that_never_vote(cluster: Cluster):
    nodes = cluster.chain(4, **FAST)
    founder = nodes[0]
    token = _token(founder, 2)
    mutes = [_patched(cluster, f"mute{i}", "mute_when_seated", join_token=token["token"],
                      bootstrap_peers=founder.p2p_address, **FAST) for i in range(2)]
    wait_until(lambda: sum(1 for s in founder.get("/validators")["standby"] if s["live"]) == 2, 40,
               message="both mute standbys live on the record")
    assert nodes[1].stop() == 0
    wait_until(lambda: nodes[1].node_id not in _seats(founder)[0], 20, message="the first leave is ordered")
    assert nodes[2].stop(timeout=60) == 0       # waits while the rest's quorum would count on a mute member
    mute_ids = {m.node_id for m in mutes}
    wait_until(lambda: not mute_ids & _seats(founder)[0], 60, interval=0.5,
               message="members that never signed are removed")
    for node in (nodes[0], nodes[3]):
        _order_final(node)
    assert _seats(founder)[0] == {nodes[0].node_id, nodes[3].node_id}
    assert not mute_ids & set().union(*_seats(founder)), "a mute member was kept for another turn"
