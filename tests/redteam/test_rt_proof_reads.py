"""Red team: proved reads (`?proof=1`) bounded before their work, not after it.

A proved read is answered only once the next block is stored (about a second), so its charge to the public rate
(settled when its answer is sent) comes a second late: every request of an address's burst passes the rate's
check before the first is charged. The bounds on waiting reads (per address, in all) were asked only after the
answer and its proofs were built: a whole book of 10,000 levels is 115 ms of the loop and 622 KB (measured at load
2.6 on 2 cores), so one address's burst of 40 cost 4.6 s of the loop before its 17th read was refused, and a
burst from many networks was bounded by nothing but the rate's total. And one /24 could hold every waiting place
(no share per network). Unit level: the route's own function with the chain, its state and its proofs replaced by
counters.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from node.api import proofs
from node.api.base import ApiError


class _Chain:
    """What `proved` reads of the chain: the state's height and maps, the store, the block listeners."""

    def __init__(self) -> None:
        self.block_listeners: list[Any] = []
        self.store: dict[int, object] = {}
        self.built = 0
        self.state = SimpleNamespace(commitment=SimpleNamespace(root=b""), results_chain=b"", book=self._book)

    def usable_core(self) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(height=7))

    def _book(self, market: str, depth: int, with_digest: bool) -> dict[str, object]:
        self.built += 1                     # the answer's levels: work done for this read
        return {"market": market, "bids": [], "asks": []}


def test_proved_reads_past_the_per_address_bound_build_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = _Chain()
    proved_made: list[str] = []
    monkeypatch.setattr(proofs, "chain_of", lambda request: chain)
    monkeypatch.setattr(proofs, "anchor_of", lambda *args: [])

    def prove_book(maps: object, market: str, depth: int | None) -> list[object]:
        proved_made.append(market)
        return []
    monkeypatch.setattr(proofs, "prove_book", prove_book)
    monkeypatch.setattr(proofs, "WAIT_SECONDS", 5.0)
    request: Any = SimpleNamespace(query={}, remote="10.9.9.9")

    async def run() -> list[object]:
        reads = [asyncio.ensure_future(proofs.proved_book(request, "BTC-USD")) for _ in range(40)]
        await asyncio.sleep(0.05)          # every read has run up to its wait, or been refused
        proofs._NEXT[cast(Any, chain)]._stored(cast(Any, SimpleNamespace(height=8)), None)
        return await asyncio.gather(*reads, return_exceptions=True)

    answered = asyncio.run(run())
    statuses = [r.status for r in answered if isinstance(r, ApiError)]
    assert len(statuses) == 40          # the admitted: 503 not_certified_yet (the store holds no block 8 here)
    assert statuses.count(429) == 40 - proofs.MAX_WAITING_PER_ADDRESS
    # the refused reads cost no book and no proof: only the admitted ones were built
    assert chain.built == proofs.MAX_WAITING_PER_ADDRESS
    assert len(proved_made) == proofs.MAX_WAITING_PER_ADDRESS


def test_one_network_cannot_hold_every_proved_read_place() -> None:
    """16 addresses of one /24, 16 waiting reads each (cheap ones: an order's proof, about a unit of the public
    rate, 80 a second for a /24), held all MAX_WAITING (256) places for as long as they asked again each block;
    a reader from any other network was answered 503 proofs_busy. Now a network holds MAX_WAITING_PER_SUBNET."""
    async def run() -> bool:
        chain: Any = SimpleNamespace(block_listeners=[])
        waits = proofs.NextBlocks(chain)
        held = [asyncio.ensure_future(waits.wait(9, f"10.7.7.{n}", 5.0))
                for n in range(1, 17) for _ in range(proofs.MAX_WAITING_PER_ADDRESS)]
        await asyncio.sleep(0)
        honest = asyncio.ensure_future(waits.wait(9, "10.8.8.8", 5.0))
        await asyncio.sleep(0)
        chain.block_listeners[0](SimpleNamespace(height=9), None)
        answered = await honest
        await asyncio.gather(*held, return_exceptions=True)
        return answered

    assert asyncio.run(run()) is True


async def test_a_proved_read_is_not_charged_what_the_loop_did_for_others_while_it_waited(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The public rate charged a request the event loop's CPU from its start to its answer, and a proved read waits
    about a block for its certificate: on a node whose loop is busy with others (here 0.2 s of it), an honest
    light client's one read was charged 200 units, ten seconds of its address's rate, and its next reads refused."""
    from aiohttp.test_utils import TestClient, TestServer
    from aiohttp import web
    from node.api.rate import PublicRateLimit, install_public_rate_limit

    chain = _Chain()
    monkeypatch.setattr(proofs, "chain_of", lambda request: chain)
    monkeypatch.setattr(proofs, "anchor_of", lambda *args: [])
    monkeypatch.setattr(proofs, "prove_book", lambda maps, market, depth: [])
    monkeypatch.setattr(proofs, "_b64", lambda value: "")
    stored = SimpleNamespace(height=8, header=SimpleNamespace(wire=lambda: []))

    async def book(request: web.Request) -> web.StreamResponse:
        return await proofs.proved_book(request, "BTC-USD")

    async def others_work() -> None:
        while not proofs._NEXT.get(cast(Any, chain)) or not proofs._NEXT[cast(Any, chain)].waiting:
            await asyncio.sleep(0.005)
        until = time.thread_time() + 0.2      # the loop busy for others while the read waits
        while time.thread_time() < until:
            pass
        chain.store[8] = (stored, SimpleNamespace(wire=lambda: []))
        proofs._NEXT[cast(Any, chain)]._stored(cast(Any, stored), None)

    limit = PublicRateLimit(per_address=10, total=1000)
    app = web.Application()
    install_public_rate_limit(app, limit, cast(Any, SimpleNamespace(check_token=lambda t: False,
                                                                    bearer_token=lambda r: None)))
    app.router.add_get("/book/{market}", book)
    async with TestClient(TestServer(app)) as client:
        busy = asyncio.ensure_future(others_work())
        answer = await client.get("/book/BTC-USD?proof=1")
        await busy
        assert answer.status == 200, await answer.text()
        later = [(await client.get("/book/BTC-USD")).status for _ in range(3)]   # unproved: answered at once
    assert later != [429, 429, 429], "one proved read was charged the loop's work for others"
