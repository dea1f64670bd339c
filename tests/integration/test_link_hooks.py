"""What a higher layer may ask of the PeerManager through the hooks it attaches: fields in our hello,
refusing a link after seeing the remote hello, one handler per message type, and keeping links to
chosen nodes past MAX_PEERS and eviction (in-process managers over real encrypted links on loopback)."""
from __future__ import annotations

import asyncio

import pytest

from config import load_settings
from node.identity import NodeIdentity
from p2p.discovery.base import Candidate
from p2p.peer_hooks import PeerHooks
from p2p.peers import PeerManager
from p2p.transport import DialError
from node.configs import peer_config


async def manager(tmp_path, name: str, **cli) -> PeerManager:
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / name), "p2p_host": "127.0.0.1", "p2p_port": 0,
                                          "target_outbound": 0, "discovery_mdns": "false", **cli})
    peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                        node_id_for=NodeIdentity.node_id_for)
    await peers.start()
    return peers


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_hello_fields_travel_and_admission_checks_refuse_with_a_reason(tmp_path):
    a = await manager(tmp_path, "a")
    b = await manager(tmp_path, "b")
    try:
        markets = {"b": ["BTC-USD"], "a_hook": "same"}
        b.attach(PeerHooks("markets", hello_fields=(lambda: {"markets": markets["b"], "node_id": "not ours"},)))
        seen = []

        def same_markets(hello: dict) -> str | None:
            if markets["a_hook"] == "broken":
                raise RuntimeError("hook bug")
            seen.append(hello)
            return None if hello.get("markets") == ["ETH-USD"] else "market_mismatch"

        a.attach(PeerHooks("markets", admit=(same_markets,)))  # a reason of its own: sent as is
        with pytest.raises(DialError) as refused:
            await b.dial("127.0.0.1", a.listen_port)
        assert refused.value.reason == "remote_market_mismatch"
        assert seen[0]["node_id"] == b.node_id and seen[0]["markets"] == ["BTC-USD"]
        last_error = b.status()["last_error"]
        assert last_error is not None and last_error["reason"] == "remote_market_mismatch"

        markets["b"] = ["ETH-USD"]
        link = await b.dial("127.0.0.1", a.listen_port)
        assert link.is_open
        await until(lambda: b.node_id in a.links)
        hello = a.links[b.node_id].remote_hello
        assert hello is not None and hello["markets"] == ["ETH-USD"]

        c = await manager(tmp_path, "c")
        try:
            markets["a_hook"] = "broken"
            with pytest.raises(DialError) as refused:
                await c.dial("127.0.0.1", a.listen_port)
            assert refused.value.reason == "remote_admission_error"  # a broken hook fails closed
            assert a.internal_errors.counts == {"peers.admission_hook:RuntimeError": 1}
        finally:
            await c.stop()
    finally:
        await a.stop()
        await b.stop()


async def test_a_message_type_has_one_handler_and_late_attachers_hear_open_links(tmp_path):
    a = await manager(tmp_path, "a")
    b = await manager(tmp_path, "b")
    try:
        a.attach(PeerHooks("first", handlers={"x.ping": lambda link, message: None}))
        with pytest.raises(ValueError, match="x.ping"):
            a.attach(PeerHooks("second", handlers={"x.ping": lambda link, message: None}))
        a.attach(PeerHooks("router", application=lambda link, message: None))
        with pytest.raises(ValueError, match="application"):
            a.attach(PeerHooks("another router", application=lambda link, message: None))
        await b.dial("127.0.0.1", a.listen_port)
        await until(lambda: b.node_id in a.links)
        heard: list[str | None] = []
        a.attach(PeerHooks("late", on_open=(lambda link: heard.append(link.remote_id),)))
        assert heard == [b.node_id]
        assert a.attached == ["first", "router", "late"]
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
async def full_hub(tmp_path):
    """A hub with MAX_PEERS=1 already linked to `other`, and a `kept` node it does not link to yet."""
    hub = await manager(tmp_path, "hub", max_peers=1)
    other = await manager(tmp_path, "other")
    kept = await manager(tmp_path, "kept")
    try:
        await other.dial("127.0.0.1", hub.listen_port)
        await until(lambda: other.node_id in hub.links)
        assert len(hub.links) == 1
        yield hub, other, kept
    finally:
        for peers in (hub, other, kept):
            await peers.stop()


async def test_kept_nodes_are_dialled_past_max_peers_and_never_evicted(tmp_path, full_hub):
    hub, other, kept = full_hub
    hub.add_candidate(Candidate("127.0.0.1", kept.listen_port, "manual", kept.node_id))
    hub.keep_linked([kept.node_id])
    await until(lambda: kept.node_id in hub.links)
    assert set(hub.links) == {other.node_id, kept.node_id}  # on top of MAX_PEERS
    assert hub.links[kept.node_id].direction == "outbound"
    assert hub.status()["kept"] == [kept.node_id]

    # a stranger cannot get in (full), and eviction never picks the kept node
    stranger = await manager(tmp_path, "stranger")
    try:
        with pytest.raises(DialError):
            await stranger.dial("127.0.0.1", hub.listen_port)
        assert kept.node_id in hub.links
    finally:
        await stranger.stop()


async def test_an_inbound_link_from_a_kept_node_passes_a_full_house(full_hub):
    hub, other, kept = full_hub
    # the hub knows where the kept node lives but has no dial due yet: the kept node dials in
    hub.book.add(Candidate("127.0.0.1", kept.listen_port, "manual", kept.node_id))
    hub.book.get(("127.0.0.1", kept.listen_port)).next_attempt = float("inf")
    hub.keep_linked([kept.node_id])
    link = await kept.dial("127.0.0.1", hub.listen_port)
    await until(lambda: kept.node_id in hub.links)
    assert link.is_open and other.node_id in hub.links and hub.links[kept.node_id].direction == "inbound"
