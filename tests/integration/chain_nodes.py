"""Chains of real nodes for partition and attack tests: on a namespace LAN (tests/integration/netns.py)
or on loopback, with helpers to time probes and to describe where every node stands.

`pinned_chain` and `pinned_loopback` make the node keys first (the same way a node makes its own at
first start), so the validator set can be pinned with VALIDATORS before anything runs: the fault model
is then exact for the whole test (n validators, quorum floor(2n/3)+1, never changed by membership),
which is what a test of "this side has a quorum, that one has none" needs. On a LAN every node listens
on the standard port of its own namespace and bootstraps to the validators' addresses (mDNS also runs,
as it would on a real LAN); on loopback each gets a free port known before it starts.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from node.identity import NodeIdentity
from tests.harness import Cluster, NodeProcess, converged, free_ports, wait_until
from tests.history import History, RecordingClient
from tests.integration.netns import NetnsLan, NetnsNode

P2P_PORT = 7946
# Links notice a silent peer within 1.5 s; a cut-off peer is redialled at least every 2 s after the heal
# (the default cap of 30 s only delays the heal, never changes what becomes final).
CHAIN_SETTINGS: dict[str, Any] = {"heartbeat_interval": 0.5, "peer_reconnect_interval": 2.0, "p2p_port": P2P_PORT}


def pinned_chain(lan: NetnsLan, base: Path, validators: int, followers: int = 0, *,
                 timeout: float = 60.0, **settings: Any) -> tuple[list[NetnsNode], list[NetnsNode]]:
    """`validators` pinned validators on hosts 0.., then `followers` on the next hosts, all on one chain."""
    names = [f"v{i}" for i in range(validators)] + [f"f{i}" for i in range(followers)]
    ids = node_ids(base, names[:validators])
    bootstrap = ",".join(f"{lan.addresses[i]}:{P2P_PORT}" for i in range(validators))
    nodes = [lan.node(base, i, name, **{**CHAIN_SETTINGS, "validators": ",".join(ids), "bootstrap_peers": bootstrap,
                                       **settings})
             for i, name in enumerate(names)]
    return _started(nodes, validators, timeout)


def node_ids(base: Path, names: list[str]) -> list[str]:
    """The node ids of nodes-to-be, their keys made in their data dirs now (as a node makes its own)."""
    return [NodeIdentity.load_or_create(base / name).node_id for name in names]


def pinned_loopback(cluster: Cluster, validators: int, followers: int = 0, *, env: dict[int, dict[str, str]] | None = None,
                    outsiders: tuple[str, ...] = (), on_started: Callable[[list[NodeProcess]], object] | None = None,
                    timeout: float = 60.0, **settings: Any) -> tuple[list[NodeProcess], list[NodeProcess]]:
    """The same on 127.0.0.1; `env` adds environment variables to node i (e.g. a faked clock); `outsiders`
    are node ids listed in VALIDATORS that no process here runs (a peer the test plays itself, linked by
    `on_started` once the nodes are up: founding waits for every listed validator)."""
    names = [f"v{i}" for i in range(validators)] + [f"f{i}" for i in range(followers)]
    ids = node_ids(cluster.base, names[:validators]) + list(outsiders)
    ports = free_ports(len(names))
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports[:validators])
    nodes = []
    for i, name in enumerate(names):
        node = cluster.node(name, start=False, **{"heartbeat_interval": 0.5, "p2p_port": ports[i],
                                                  "validators": ",".join(ids), "bootstrap_peers": bootstrap,
                                                  **settings})
        node.env_extra.update((env or {}).get(i, {}))
        nodes.append(node)
    return _started(nodes, validators, timeout, seats=len(ids), on_started=on_started)


def _started(nodes: list[Any], validators: int, timeout: float, seats: int | None = None,
             on_started: Callable[[list[Any]], object] | None = None) -> tuple[list[Any], list[Any]]:
    seats = validators if seats is None else seats
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(30.0)
    if on_started is not None:
        on_started(nodes)

    def formed() -> bool:
        views = [n.status() for n in nodes]
        return (len({v["chain_id"] for v in views}) == 1 and views[0]["chain_id"] is not None
                and all(len(v["validators"]) == seats and v["quorum"] for v in views))
    wait_until(formed, timeout, interval=0.3, message=f"{len(nodes)} nodes on one chain with {seats} validators")
    return nodes[:validators], nodes[validators:]


def proposer_now(node: NodeProcess) -> str:
    """The node id of the validator proposing at `node`'s current height and round (round 0 rotates over
    the validators that signed the last commit: all of them while every one is up)."""
    status = node.status()
    consensus = status["exchange"].get("consensus") or {}
    height, round_ = consensus.get("height", status["height"] + 1), consensus.get("round", 0)
    keys = sorted((bytes.fromhex(k), n) for n, k in status["validator_keys"].items())
    return keys[(height + round_) % len(keys)][1]


def heights(clients: list[RecordingClient]) -> dict[str, int]:
    out = {}
    for client in clients:
        status, body = client.get("/status")
        if status == 200:
            out[client.name] = body["height"]
    return out


class Probe(threading.Thread):
    """One resting order far from the market (it never trades), timed from a moment the test chose."""

    def __init__(self, client: RecordingClient, since: float, wait: float, price: str = "50.00",
                 account: str = "default") -> None:
        super().__init__(daemon=True)
        self.client, self.since, self.wait = client, since, wait
        self.order = {"market": "BTC-USD", "side": "buy", "type": "post_only", "price": price, "qty": "0.1",
                      "account": account}
        self.status = 0
        self.body: Any = None
        self.latency: float | None = None

    def run(self) -> None:
        self.status, self.body = self.client.post_order(self.order, wait=self.wait, timeout=self.wait + 15)
        self.latency = time.monotonic() - self.since

    @property
    def order_id(self) -> str | None:
        return (self.body or {}).get("order", {}).get("id") if isinstance(self.body, dict) else None


def probe_all(clients: list[RecordingClient], since: float, wait: float) -> list[Probe]:
    probes = [Probe(c, since, wait) for c in clients]
    for probe in probes:
        probe.start()
    for probe in probes:
        probe.join(wait + 30)
    return probes


def final_everywhere(clients: list[RecordingClient], order_ids: Sequence[str | None]) -> bool:
    """Every order is final on every node (the node that answered it 202 shows it `pending` until then)."""
    return all(status == 200 and body.get("final") is not False
               for c in clients for oid in order_ids for status, body in [c.get(f"/orders/{oid}")])


def snapshot(nodes: Sequence[NodeProcess]) -> str:
    """Each node's chain position, for failure messages."""
    lines = []
    for node in nodes:
        try:
            s = node.status()
            c = s["exchange"].get("consensus") or {}
            lines.append(f"{node.name}: {s['role']} h={s['height']} quorum={s['quorum']} round={c.get('round')} "
                         f"step={c.get('step')} peers={s['peers_connected']} halted={s['exchange'].get('halted')}")
        except (OSError, KeyError, AssertionError) as exc:
            lines.append(f"{node.name}: unreachable ({exc})")
    return "\n".join(lines)


def wait_for(predicate: Any, timeout: float, message: str, nodes: Sequence[NodeProcess], interval: float = 0.2) -> Any:
    """wait_until, with every node's chain position in the failure message."""
    try:
        return wait_until(predicate, timeout, interval=interval, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{snapshot(nodes)}") from None


def settled(history: History, clients: list[RecordingClient], nodes: Sequence[NodeProcess], timeout: float = 30.0,
            markets: tuple[str, ...] = ("BTC-USD",)) -> None:
    """The end of a run: every node converges on one state, then the history's end checks, then no
    contradiction may have been seen at any time."""
    wait_for(lambda: converged(nodes), timeout, "every node converges on one state", nodes, interval=0.3)
    history.settle(clients, markets)
    history.assert_clean()


def load_line() -> str:
    with open("/proc/loadavg") as f:
        return "load " + " ".join(f.read().split()[:3])
