"""Forwarding a broadcast while a send closes a link: a large broadcast overflowed one neighbour's send
buffer, the link closed in the middle of the push, the links map changed size under the loop, and the
`RuntimeError: dictionary changed size during iteration` escaped into the handling of the copy that was
being forwarded, which closed the link it came from: an honest one."""
from __future__ import annotations

import os

import pytest

from node.configs import router_config
from p2p.close_reason import CloseReason
from p2p.connection import PeerLink
from p2p.messages import Message
from p2p.peers import PeerManager
from p2p.router import MessageRouter
from tests.unit.p2p.rpc_nodes import eventually, local_peers

pytestmark = pytest.mark.timeout(30)

async def _node(tmp_path, name: str) -> tuple[PeerManager, MessageRouter]:
    settings, _, peers = local_peers(tmp_path, name)
    router = peers.attach(MessageRouter(peers, router_config(settings)))
    router.declare_broadcast("note", origin_signed=True)
    await peers.start()
    await router.start()
    return peers, router


async def _link(a: PeerManager, b: PeerManager) -> None:
    await a.dial("127.0.0.1", b.listen_port)
    await eventually(lambda: b.node_id in a.links and a.node_id in b.links)


def _full_when_checked(router: MessageRouter, link: PeerLink) -> None:
    """Checking the next note (just before it is forwarded) finds `link`'s send buffer full: the push's send to
    it overflows and closes it the way a slow reader's link is closed."""
    def check(message: Message, src: str) -> bool:
        link._bound = -1
        return True
    router.set_validator("note", check)


async def test_a_link_closed_by_a_send_mid_push_leaves_the_rest_of_the_push_and_the_sender_link_alone(tmp_path):
    names = ("sender", "hub", "slow", "other", "last")
    made = {name: await _node(tmp_path, name) for name in names}
    try:
        (sender, _), (hub, hub_router) = made["sender"], made["hub"]
        for name in ("sender", "slow", "other", "last"):
            await _link(made[name][0], hub)
        received: list[Message] = []
        made["other"][1].subscribe("note", lambda message, src: received.append(message))
        made["last"][1].subscribe("note", lambda message, src: received.append(message))
        slow_link = hub.links[made["slow"][0].node_id]
        assert isinstance(slow_link, PeerLink)
        _full_when_checked(hub_router, slow_link)

        made["sender"][1].broadcast({"type": "note", "payload": os.urandom(400).hex()})
        await eventually(lambda: len(received) == 2)           # the hub forwarded it past the closed link

        assert made["slow"][0].node_id not in hub.links
        assert hub.close_reasons.get(str(CloseReason.SEND_BUFFER_OVERFLOW)) == 1
        assert sender.node_id in hub.links and hub.node_id in sender.links, "the honest sender's link was closed"
        assert hub.internal_errors.counts == {}, hub.internal_errors.counts
        assert hub_router.counters.events["forwarded_frames"] >= 2
    finally:
        for peers, router in made.values():
            await router.stop()
            await peers.stop()
