"""`last seen` of a connected peer (GET /peers, `exchange-node peers`) is when its last frame came, not when
the link opened; test.echo is offered only by a node whose DEBUG_API is on."""
from __future__ import annotations

import pytest

from config import load_settings
from node.configs import NodeConfigs
from p2p.rpc.builtins import PING, TEST_ECHO, Builtins
from tests.unit.p2p.rpc_nodes import link, nodes

pytestmark = pytest.mark.timeout(30)


async def test_a_connected_peer_was_last_seen_at_its_last_frame(tmp_path):
    async with nodes(tmp_path, {}, {}) as (a, b):
        await link(a, b)
        record = a.peers.peers[b.node_id]
        at_link = record.as_dict()["last_seen"]
        frame_before = record.link.last_frame_at
        assert frame_before is not None
        await a.rpc.request_peer(b.node_id, "ping")         # b's answer is a frame a receives
        after = record.as_dict()["last_seen"]
        assert record.link.last_frame_at > frame_before
        assert after == record.link.last_frame_at and after > at_link


class Registry:
    def __init__(self) -> None:
        self.services: dict[str, object] = {}

    def register(self, service: str, handler: object) -> None:
        self.services[service] = handler


@pytest.mark.parametrize("debug_api, offered", [("false", {PING}), ("true", {PING, TEST_ECHO})])
def test_test_echo_is_offered_only_with_debug_api(tmp_path, debug_api, offered):
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "debug_api": debug_api})
    config = NodeConfigs.from_settings(settings).rpc
    registry = Registry()
    Builtins("n" * 40).register_all(registry, test_services=config.test_services)
    assert set(registry.services) == offered
