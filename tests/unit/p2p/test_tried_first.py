"""Tried addresses first (a restart must link to honest peers first): while a dial to an address we
reached before is under way, no address a stranger told us is dialled or felt; once the tried ones have
answered, the rest are."""
from __future__ import annotations

import asyncio

import pytest

from config import load_settings
from node.configs import peer_config
from node.identity import NodeIdentity
from p2p.discovery.base import Candidate
from p2p.peers import PeerManager
from tests.harness import closed_port

pytestmark = pytest.mark.timeout(30)


async def test_no_unverified_address_is_dialled_or_felt_while_a_tried_one_is_being_dialled(tmp_path) -> None:
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "p2p_host": "127.0.0.1", "p2p_port": 0,
                                          "target_outbound": 8, "protection_mode": "off", "handshake_timeout": 0.5,
                                          "discovery_mdns": False})
    peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                        node_id_for=NodeIdentity.node_id_for)
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)         # accepts, never answers the handshake: the dial stays under way

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    tried = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        peers.book.mark_connected(tried, "ab" * 20)
        for n in range(20):
            peers.add_candidate(Candidate(f"127.9.{n}.1", closed_port(), "pex", f"{n:040x}"), reporter="stranger")
        peers.book.mark_claimed(("127.8.0.1", closed_port()), "cd" * 20, "inbound:stranger")
        peers._dial_due()
        # in the same turn, before the dial's task has run at all (the loop does this right after _dial_due)
        assert peers._dialling == {tried}, peers._dialling
        assert not peers._start_feeler(), "a feeler went out while a tried address was being dialled"
        await asyncio.sleep(0.05)
        peers._dial_due()
        assert not peers._start_feeler(), "a feeler went out while a tried address was being dialled"
        assert peers._dialling == {tried}, peers._dialling
        assert peers.counters["dials"] == 1
        await asyncio.gather(*list(peers._dial_tasks))           # the tried dial times out
        peers._dial_due()
        await asyncio.sleep(0.05)
        assert peers.counters["dials"] >= 1 + 7, peers.counters  # the tried one failed: the rest go
        assert peers._start_feeler()
        await asyncio.gather(*list(peers._dial_tasks), return_exceptions=True)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await peers.transport.close()
