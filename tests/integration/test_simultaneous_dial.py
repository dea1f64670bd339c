"""Two nodes dialling each other at the same moment keep exactly one link, the same on both sides."""
from __future__ import annotations

import asyncio

from p2p.connection import PeerLink
from p2p.peers import PeerManager
from p2p.transport import DialError
from tests.integration.managers import make_manager, watch


async def settled(a: PeerManager, b: PeerManager) -> None:
    """Both sides hold one open link to the other and nothing else in flight."""
    async with asyncio.timeout(3):
        while True:
            link_a, link_b = a.links.get(b.node_id), b.links.get(a.node_id)
            if (link_a and link_b and len(a._claimed) == 1 and len(b._claimed) == 1
                    and a._claimed[b.node_id] is link_a and b._claimed[a.node_id] is link_b):
                return
            await asyncio.sleep(0.005)


async def test_simultaneous_dials_keep_exactly_one_link(tmp_path):
    a = await make_manager(tmp_path, "a", target_outbound=0)
    b = await make_manager(tmp_path, "b", target_outbound=0)
    try:
        for _ in range(40):
            results = await asyncio.gather(a.dial("127.0.0.1", b.listen_port), b.dial("127.0.0.1", a.listen_port),
                                           return_exceptions=True)
            assert any(not isinstance(r, Exception) for r in results) or all(
                isinstance(r, DialError) and "duplicate" in r.reason for r in results), results
            await settled(a, b)
            link_a, link_b = a.links[b.node_id], b.links[a.node_id]
            assert link_a.transport is not None and link_b.transport is not None
            # the same TCP connection seen from both ends
            assert link_a.transport.get_extra_info("sockname") == link_b.transport.get_extra_info("peername")
            assert link_a.transport.get_extra_info("peername") == link_b.transport.get_extra_info("sockname")
            # the survivor is the one dialled by the smaller node id, on both sides
            smaller = min(a.node_id, b.node_id)
            assert link_a.dialer_id == smaller and link_b.dialer_id == smaller
            closed = asyncio.get_running_loop().create_future()

            def on_close(link: PeerLink) -> None:
                if not closed.done():
                    closed.set_result(True)
            watch(b).on_close.append(on_close)
            link_a.close("test_round_over")  # a reason of the test's own
            await asyncio.wait_for(closed, 2)
            watch(b).on_close.clear()
            assert not a.links and not b.links
    finally:
        await a.stop()
        await b.stop()


async def test_second_link_to_connected_node_is_refused(tmp_path):
    a = await make_manager(tmp_path, "a", target_outbound=0)
    b = await make_manager(tmp_path, "b", target_outbound=0)
    try:
        await a.dial("127.0.0.1", b.listen_port)
        await settled(a, b)
        first = a.links[b.node_id]
        try:
            await a.dial("127.0.0.1", b.listen_port)
            raise AssertionError("a second link must be refused")
        except DialError as exc:
            assert "duplicate" in exc.reason
        await settled(a, b)
        assert a.links[b.node_id] is first  # the repeat dial was refused; the old link stays
        assert len(a.links) == 1 and len(b.links) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_self_connection_refused(tmp_path):
    a = await make_manager(tmp_path, "a", target_outbound=0)
    try:
        try:
            await a.dial("127.0.0.1", a.listen_port)
            raise AssertionError("dialling ourselves must fail")
        except DialError as exc:
            assert exc.reason in ("self_connection", "remote_self_connection")
        assert not a.links
    finally:
        await a.stop()
