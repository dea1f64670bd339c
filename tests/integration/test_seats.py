"""Real processes: seats are granted, never taken, and a validator leaving never halts the exchange (issue 24).

- The README's "three nodes on one machine" lines, run as written (data dirs and ports moved into the
  test's own space, mDNS off): one validator and two standbys; stop any one of the three with SIGINT and
  the other two finalise an order within 5 s.
- Strangers with default settings, one through a bootstrap address and one found by mDNS on loopback,
  get no seat for 30 s while their orders become final.
- Seats by approval: `exchange-node validators add` on a lone founder makes standbys, promoted together
  once the set can grow to four; on four validators one approval is not enough, three (more than two
  thirds) are.
"""
from __future__ import annotations

import json
import re
import shlex
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Cluster, NodeProcess, free_ports, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- three-nodes:")
    block = text[text.index("```sh", marker) + 5:text.index("```", text.index("```sh", marker) + 5)]
    return [line.strip() for line in block.strip().splitlines()]


class ReadmeNode(NodeProcess):
    """A node started by one README line, its paths and ports moved into the test's own space."""

    def __init__(self, base: Path, name: str, argv: list[str]) -> None:
        super().__init__(base, name)
        self.argv = argv
        self.env_extra = {"DISCOVERY_MDNS": "false", "NETWORK_ID": f"readme-{uuid.uuid4().hex[:12]}"}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "node.cli", *self.argv]


def _readme_network(cluster: Cluster) -> tuple[list[ReadmeNode], list[str]]:
    lines = _readme_block()
    assert lines[0] == "N=.venv/bin/exchange-node", lines[0]
    starts = [line for line in lines if line.startswith("$N start ")]
    assert len(starts) == 3, starts
    ports = iter(free_ports(6))
    port_map: dict[str, str] = {}
    network = f"readme-{uuid.uuid4().hex[:12]}"
    nodes: list[ReadmeNode] = []
    for line in starts:
        assert line.endswith(" &"), line
        words = line[:-2].replace('"$(cat /tmp/a/join-token)"', "TOKEN").split()[1:]
        argv: list[str] = []
        for word in words:
            for original in re.findall(r"\b79\d\d\b", word):
                if original not in port_map:
                    port_map[original] = str(next(ports))
                word = word.replace(original, port_map[original])
            word = word.replace("/tmp/", f"{cluster.base}/")
            if word == "TOKEN":
                word = nodes[0].join_token()
            argv.append(word)
        name = Path(argv[argv.index("--data-dir") + 1]).name
        node = ReadmeNode(cluster.base, name, argv)
        node.env_extra["NETWORK_ID"] = network
        cluster.nodes.append(node)
        node.start()
        if not nodes:
            wait_until(lambda: (cluster.base / "a" / "join-token").exists(), 15, message="A founds and writes its token")
        nodes.append(node)
    return nodes, lines


def _cli_words(line: str, cluster: Cluster) -> list[str]:
    """A README `$N ...` line's arguments, its /tmp paths moved into the test's directory."""
    assert line.startswith("$N "), line
    return [word.replace("/tmp/", f"{cluster.base}/") for word in shlex.split(line, comments=True)[1:]]


def _final_order(node: NodeProcess, client_id: str) -> float:
    """Place an order through the CLI as a user does; seconds until it was answered final."""
    started = time.monotonic()
    done = node.cli("order", "buy", "BTC-USD", "0.1", "--price", "100", "--wait", "5", "--json", timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer.get("final") is True or answer.get("order", {}).get("final") is True, answer
    return time.monotonic() - started


@pytest.mark.parametrize("stopped", ["a", "b", "c"])
def test_the_readmes_three_nodes_survive_any_one_stopped_with_ctrl_c(cluster: Cluster, stopped: str):
    nodes, lines = _readme_network(cluster)
    a, b, c = nodes
    wait_until(lambda: all(len(n.status()["validators"]) == 1 and n.status()["standby"] == 2 for n in nodes), 30,
               interval=0.2, message="A validates, B and C are standbys")
    shown = a.cli(*_cli_words(lines[4], cluster))        # `$N validators --data-dir /tmp/a`
    assert shown.returncode == 0 and "standby" in shown.stdout, shown.stdout + shown.stderr
    placed = b.cli(*_cli_words(lines[5], cluster))       # `$N order buy BTC-USD 0.5 --price 100 --data-dir /tmp/b`
    assert placed.returncode == 0, placed.stdout + placed.stderr
    victim = {"a": a, "b": b, "c": c}[stopped]
    rest = [n for n in nodes if n is not victim]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGINT)
    assert victim.proc.wait(15) == 0, victim.log_tail()
    for node in rest:
        took = _final_order(node, f"after-{stopped}")
        assert took < 5.0, f"an order on {node.name} took {took:.1f}s to be final after {stopped} stopped"
    if stopped == "a":
        assert "validator seat handed back" in victim.log_path.read_text(), victim.log_tail()
        views = [n.status() for n in rest]
        assert all(len(v["validators"]) == 1 and v["validators"][0] in {b.node_id, c.node_id} for v in views), views


def test_strangers_with_default_settings_get_no_seat(cluster: Cluster, tmp_path: Path):
    network = f"strangers-{uuid.uuid4().hex[:12]}"
    lan: dict[str, Any] = {"network_id": network, "discovery_mdns": "true", "mdns_interfaces": "127.0.0.1", **FAST}
    founder, = cluster.chain(1, **lan)
    by_bootstrap = cluster.node("stranger-bootstrap", network_id=network, bootstrap_peers=founder.p2p_address, **FAST)
    by_mdns = cluster.node("stranger-mdns", **lan)
    strangers = [by_bootstrap, by_mdns]
    wait_until(lambda: all(s.status()["chain_id"] == founder.status()["chain_id"] for s in strangers), 20,
               message="both strangers follow the founder's chain")
    for stranger in strangers:
        _final_order(stranger, stranger.name)
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        views = [n.status() for n in (founder, *strangers)]
        assert all(v["validators"] == [founder.node_id] for v in views), views
        assert all(v["role"] == "follower" for v in views[1:]), views
        time.sleep(1.0)
    seats = founder.get("/validators")
    assert seats["standby"] == [] and seats["pending"] == [], seats


def test_seats_by_approval_grow_the_set_to_four_and_need_two_thirds(cluster: Cluster):
    founder, = cluster.chain(1, **FAST)
    followers = [cluster.node(f"f{i}", bootstrap_peers=founder.p2p_address, **FAST) for i in range(4)]
    wait_until(lambda: all(f.status()["chain_id"] == founder.status()["chain_id"] for f in followers), 20)
    wait_until(lambda: {f.node_id for f in followers} <= founder.connected_ids(), 20, message="links to all")
    for follower in followers[:3]:
        added = founder.cli("validators", "add", follower.node_id)
        assert added.returncode == 0, added.stdout + added.stderr
    members = {founder.node_id, *(f.node_id for f in followers[:3])}
    wait_until(lambda: all(set(n.status()["validators"]) == members for n in (founder, *followers)), 20,
               interval=0.2, message="the three approved standbys promoted together: four validators")
    late = followers[3]
    validators = [founder, *followers[:3]]
    wait_until(lambda: {late.node_id} <= validators[1].connected_ids() | {late.node_id}, 10)
    once = validators[0].cli("validators", "add", late.node_id, "--json")
    assert once.returncode == 0, once.stdout + once.stderr
    pending = json.loads(once.stdout)["pending"]
    wait_until(lambda: any(p["node_id"] == late.node_id and p["approvals"] == 1 and p["needed"] == 3
                           for p in founder.get("/validators")["pending"]), 10, message="one approval recorded")
    assert late.node_id not in {s["node_id"] for s in founder.get("/validators")["standby"]}, pending
    for validator in validators[1:3]:
        wait_until(lambda: late.node_id in {p["node_id"] for p in validator.get("/validators")["pending"]}, 10)
        done = validator.cli("validators", "add", late.node_id)
        assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: late.node_id in {s["node_id"] for s in founder.get("/validators")["standby"]}, 10,
               message="three of four approved: the node is a standby")
    assert len(founder.status()["validators"]) == 4, "a fifth seat does not tolerate more faults: it waits"
    _final_order(late, "late")
