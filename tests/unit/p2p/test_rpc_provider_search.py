"""A call for a service no linked peer offers asks the provider finder (the DHT in a node) to link to a
provider, then goes to it. Concurrent calls share one search; a search that found nobody is not
repeated for a while, so calls for a service nobody offers cannot become a lookup storm."""
from __future__ import annotations

import asyncio

import pytest

from p2p.rpc import errors as e
from tests.unit.p2p.rpc_nodes import nodes


class DialingFinder:
    """Knows one provider's port (as the DHT would know its record) and dials it when asked."""

    def __init__(self, caller, provider) -> None:
        self.caller, self.provider = caller, provider
        self.asked: list[str] = []

    async def link_provider(self, service: str, timeout: float) -> bool:
        self.asked.append(service)
        await asyncio.sleep(0.05)                  # a lookup takes a few round trips
        if self.provider is None or service != "svc.quote":
            return False
        await self.caller.peers.dial("127.0.0.1", self.provider.peers.listen_port)
        return True


async def quote(payload, peer):
    return {"price": 42}


@pytest.mark.asyncio
async def test_a_call_with_no_linked_provider_links_to_one_the_finder_knows(tmp_path) -> None:
    async with nodes(tmp_path, {}, {"services": {"svc.quote": quote}}) as (caller, provider):
        finder = DialingFinder(caller, provider)
        caller.rpc.use_finder(finder)
        answers = await asyncio.gather(*(caller.rpc.request("svc.quote", {}, timeout=5.0) for _ in range(5)))
        assert answers == [{"price": 42}] * 5
        assert finder.asked == ["svc.quote"], "five concurrent calls, one search"
        assert provider.node_id in caller.peers.links
        assert caller.rpc.provider_search is not None and caller.rpc.provider_search.counters["found"] == 1


@pytest.mark.asyncio
async def test_a_service_nobody_offers_is_searched_once_then_refused_at_once(tmp_path) -> None:
    async with nodes(tmp_path, {}) as (caller,):
        finder = DialingFinder(caller, None)
        caller.rpc.use_finder(finder)
        for _ in range(20):
            with pytest.raises(e.RpcError) as refused:
                await caller.rpc.request("svc.nobody", {}, timeout=2.0)
            assert refused.value.code == e.NO_PEERS
        assert finder.asked == ["svc.nobody"], "one search, then no storm"
        assert caller.rpc.provider_search is not None
        assert caller.rpc.provider_search.counters["skipped"] == 19


@pytest.mark.asyncio
async def test_without_a_finder_no_provider_fails_as_before(tmp_path) -> None:
    async with nodes(tmp_path, {}) as (caller,):
        with pytest.raises(e.RpcError) as refused:
            await caller.rpc.request("svc.quote", {}, timeout=1.0)
        assert refused.value.code == e.NO_PEERS
