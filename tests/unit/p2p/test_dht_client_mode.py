"""DHT client mode (as libp2p's kad-dht): a node behind a NAT nobody can dial looks things up and
publishes its record, but answers no queries and keeps nobody's records; servers leave a peer that says it
is private out of the contacts they hand out and out of their own lookups, so nobody waits on a node it
cannot reach."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, cast

import pytest

from node.identity import NodeIdentity
from p2p.dht.service import FIND, STORE, DhtService
from p2p.dht.table import Contact
from p2p.rpc import errors as e


@dataclass
class Link:
    remote_id: str
    remote_addr: tuple[str, int]


class Peers:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.links: dict[str, Any] = {}

    def listen_address(self, link: Any) -> tuple[str, int] | None:
        return None

    async def dial(self, host: str, port: int, source: str = "manual") -> Any:
        raise OSError("no dialling here")


class Rpc:
    """Answers every find with no contacts; records whom it was sent to."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any, str], Any]] = {}
        self.asked: list[str] = []

    def register(self, service: str, handler: Callable[[Any, str], Any]) -> None:
        self.handlers[service] = handler

    async def request_peer(self, node_id: str, service: str, payload: Any = None, timeout: float | None = None) -> Any:
        self.asked.append(node_id)
        return {"contacts": []}


def _service(private: bool, private_peers: set[str]) -> tuple[DhtService, Peers, Rpc, NodeIdentity]:
    me = NodeIdentity.generate()
    peers, rpc = Peers(me.node_id), Rpc()
    state = {"private": private}
    dht = DhtService(peers, rpc, public_key=me.public_key_bytes, sign=me.sign, verify=NodeIdentity.verify,
                     node_id_for=NodeIdentity.node_id_for, services=lambda: ("exchange-node",),
                     addresses=lambda: (("11.18.1.1", 7946, "observed"),), private=lambda: state["private"],
                     peer_private=lambda node_id: node_id in private_peers)
    return dht, peers, rpc, me


def _fill(dht: DhtService, count: int) -> list[str]:
    """`count` linked contacts, each in its own /24."""
    ids = [NodeIdentity.generate().node_id for _ in range(count)]
    for i, node_id in enumerate(ids):
        dht.table.add(Contact(node_id, f"11.18.{i + 1}.1", 7946, f"11.18.{i + 1}.0/24"), 0.0)
        cast(Peers, dht.peers).links[node_id] = Link(node_id, (f"11.18.{i + 1}.1", 7946))    # the fake's links
    return ids


def test_a_client_answers_no_queries_and_keeps_no_records():
    dht, _, _, me = _service(private=True, private_peers=set())
    _fill(dht, 3)
    assert dht.mode == "client" and dht.view()["mode"] == "client"
    other = NodeIdentity.generate()
    for service, payload in ((FIND, {"target": me.node_id}), (STORE, {"record": None})):
        with pytest.raises(e.RpcError) as refused:
            dht.rpc.handlers[service](payload, other.node_id)          # type: ignore[attr-defined]
        assert refused.value.code == e.UNAVAILABLE and "client mode" in str(refused.value)
    assert dht.stats.refused_as_client == 2 and len(dht.store.nodes) == 0


def test_a_server_hands_out_no_client_and_asks_none():
    clients: set[str] = set()
    dht, _, rpc, me = _service(private=False, private_peers=clients)
    ids = _fill(dht, 12)
    clients.update(ids[:6])
    assert dht.mode == "server"
    answer = dht.rpc.handlers[FIND]({"target": me.node_id}, ids[-1])      # type: ignore[attr-defined]
    handed = {c[0] for c in answer["contacts"]}
    assert handed and not handed & clients, "a client is never handed out as a contact"
    assert handed == set(ids[6:])
    asyncio.run(dht._lookup(me.node_id, want_value=False))
    assert rpc.asked and not set(rpc.asked) & clients, "a lookup never waits on a client"


def test_mode_follows_reachability():
    state = {"private": False}
    me = NodeIdentity.generate()
    dht = DhtService(Peers(me.node_id), Rpc(), public_key=me.public_key_bytes, sign=me.sign,
                     verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for, services=lambda: (),
                     addresses=lambda: (), private=lambda: state["private"])
    assert dht.mode == "server"
    state["private"] = True
    assert dht.mode == "client"
