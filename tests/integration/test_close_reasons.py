"""A peer's goodbye is its opinion: one saying "banned" bans nobody here, and is counted as the peer's."""
from __future__ import annotations

import asyncio

from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.connection import PeerLink
from tests.integration.managers import make_manager, watch


async def test_a_goodbye_that_spells_our_verdicts_is_recorded_as_the_peers_words(tmp_path):
    a = await make_manager(tmp_path, "a", target_outbound=0)
    b = await make_manager(tmp_path, "b", target_outbound=0)
    try:
        for said, recorded in (("banned", "remote_banned"), ("SELF_CONNECTION!", "remote_self_connection"),
                               ("\x00" * 10, "remote_unknown")):
            closed, b_closed = _next(watch(a).on_close, b.node_id), _next(watch(b).on_close, a.node_id)
            opened = _next(watch(a).on_open, b.node_id)
            link = await b.dial("127.0.0.1", a.listen_port)
            await asyncio.wait_for(opened, 5)
            link.send(m.goodbye(said, "hostile words"))
            closed_link = await asyncio.wait_for(closed, 5)
            assert closed_link.close_reason == recorded
            assert a.close_reasons[recorded] == 1
            await asyncio.wait_for(b_closed, 5)
        record = a.peers[b.node_id]
        assert record.status == "disconnected" and a.counters["bans"] == 0
        assert CloseReason.BANNED not in a.close_reasons
        # nothing stops a from being dialled again: the words were not taken as a no-redial verdict
        opened = _next(watch(a).on_open, b.node_id)
        await b.dial("127.0.0.1", a.listen_port)
        await asyncio.wait_for(opened, 5)
    finally:
        await a.stop()
        await b.stop()


def _next(listeners: list, node_id: str) -> asyncio.Future:
    """The next link to `node_id` the listeners are told about."""
    future = asyncio.get_running_loop().create_future()

    def listener(link: PeerLink) -> None:
        if not future.done() and link.remote_id == node_id:
            future.set_result(link)
    listeners.append(listener)
    return future
