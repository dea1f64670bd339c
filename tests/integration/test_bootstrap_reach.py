"""A bootstrap address that was down when the node started is still reached once it comes up, even
after the node filled its outbound links through other peers: otherwise the two sides of the
network stay split (seen with 20 nodes started at once, each bootstrapped to the one before)."""
from __future__ import annotations

import asyncio

import pytest

from p2p.connection import PeerLink
from p2p.transport import DialError
from tests.harness import free_ports
from tests.integration.managers import make_manager, watch


async def test_bootstrap_peer_down_at_start_is_reached_although_outbound_target_is_met(tmp_path):
    (late_port,) = free_ports(1)
    other = await make_manager(tmp_path, "other", target_outbound=0)
    node = await make_manager(tmp_path, "node", target_outbound=1, peer_reconnect_interval=2.0)
    late = None
    try:
        with pytest.raises(DialError):                                         # nobody listens there yet
            await node.dial("127.0.0.1", late_port, source="bootstrap")
        known = node.book.get(("127.0.0.1", late_port))
        assert known is not None and known.failures >= 1
        await node.dial("127.0.0.1", other.listen_port)                        # the outbound target is met
        assert node.outbound_count == 1
        linked: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_open(link: PeerLink) -> None:
            if not linked.done():
                linked.set_result(link)
        watch(node).on_open.append(on_open)
        late = await make_manager(tmp_path, "late", port=late_port, target_outbound=0)
        link = await asyncio.wait_for(linked, 6)                               # backoff capped at 2 s here
        assert link.remote_id == late.node_id and link.direction == "outbound"
        # reached once, the address is an ordinary known peer: no more dials beyond the target for it
        known = node.book.get(("127.0.0.1", late_port))
        assert known is not None and known.last_connected is not None
    finally:
        for manager in (node, other, late):
            if manager is not None:
                await manager.stop()
