"""A peer's goodbye is its opinion: one saying "banned" bans nobody here, and is counted as the peer's."""
from __future__ import annotations

import asyncio

from p2p import messages as m
from p2p.close_reason import CloseReason
from tests.integration.managers import make_manager


async def test_a_goodbye_that_spells_our_verdicts_is_recorded_as_the_peers_words(tmp_path):
    a = await make_manager(tmp_path, "a", target_outbound=0)
    b = await make_manager(tmp_path, "b", target_outbound=0)
    try:
        for said, recorded in (("banned", "remote_banned"), ("SELF_CONNECTION!", "remote_self_connection"),
                               ("\x00" * 10, "remote_unknown")):
            closed = asyncio.get_running_loop().create_future()
            a.close_listeners.append(lambda link, f=closed: f.done() or f.set_result(link))
            link = await b.dial("127.0.0.1", a.listen_port)
            await asyncio.wait_for(_linked(a, b), 5)
            link.send(m.goodbye(said, "hostile words"))
            closed_link = await asyncio.wait_for(closed, 5)
            assert closed_link.close_reason == recorded
            assert a.close_reasons[recorded] == 1
            await asyncio.wait_for(_unlinked(b, a), 5)
        record = a.peers[b.node_id]
        assert record.status == "disconnected" and a.counters["bans"] == 0
        assert CloseReason.BANNED not in a.close_reasons
        # nothing stops a from being dialled again: the words were not taken as a no-redial verdict
        await b.dial("127.0.0.1", a.listen_port)
        await asyncio.wait_for(_linked(a, b), 5)
    finally:
        await a.stop()
        await b.stop()


async def _linked(a, b) -> None:
    while b.node_id not in a.links or a.node_id not in b.links:
        await asyncio.sleep(0.01)


async def _unlinked(b, a) -> None:
    while a.node_id in b.links:
        await asyncio.sleep(0.01)
