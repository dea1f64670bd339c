"""Red team: pages' WebRTC offers relayed to another node (`rtc_offer`, node/browser/service.py) share out the
relay's waiting places.

A node carries at most RTC_WAITING (64) offers waiting for their answers at once, each up to RTC_WAIT (12 s). A
session may carry 4 offers at once and an address may hold 8 sessions, so one address held 32 places and two
held them all, for 12 s at a time, by offering to a linked node that never answers (the attacker's own): every
other page was told `busy`. Unit level: the service with fake links, as tests/unit/node/test_browser_stun_rtc.py.
"""
from __future__ import annotations

import asyncio

from tests.unit.node.test_browser_stun_rtc import FakeLink, service


async def test_one_address_or_one_silent_node_cannot_hold_every_relay_place() -> None:
    svc = service()
    silent, honest = FakeLink("aa" * 20), FakeLink("bb" * 20)
    svc.peers.links = {silent.remote_id: silent, honest.remote_id: honest}
    svc.rtc_peers.update({silent.remote_id: True, honest.remote_id: True})
    flood = [asyncio.ensure_future(svc.rtc_offer(silent.remote_id, "v=0", "10.0.0.1")) for _ in range(64)]
    others = [asyncio.ensure_future(svc.rtc_offer(silent.remote_id, "v=0", f"10.{n}.0.1")) for n in range(2, 66)]
    await asyncio.sleep(0)
    page = asyncio.ensure_future(svc.rtc_offer(honest.remote_id, "v=0 honest", "10.200.0.9"))
    await asyncio.sleep(0)
    assert page.done() is False, f"the honest page's offer was refused: {page.result()}"
    offer = honest.sent[-1]
    svc._on_rtc_answer(honest, {"type": "browser_rtc_answer", "id": offer["id"], "sdp": "v=0 answer"})
    assert await page == {"sdp": "v=0 answer"}
    held = [f for f in flood if not f.done()]
    assert 0 < len(held) <= 8, f"one address holds {len(held)} of the relay's places"
    held_silent = [f for f in flood + others if not f.done()]
    assert len(held_silent) < 64, "offers to one silent node hold every place"
    for f in flood + others:
        f.cancel()
    await asyncio.gather(*flood, *others, return_exceptions=True)
