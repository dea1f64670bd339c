"""Real process: a node behind a reverse proxy on its own machine (API_TRUSTED_PROXIES=127.0.0.1) limits each client
the proxy names as itself. Without it every client of the proxy looked local (exempt from the public rate) and
shared one address's stream share. A client of the proxy is rate-limited as its own address and gets its own
stream share; claiming to be local in the header it writes itself earns nothing; a header from anyone but the proxy
is not read; a proxy naming no address, or this machine, gets 400; /status names the limited client, not the
proxy."""
from __future__ import annotations

import asyncio
from typing import Iterator

import aiohttp
import pytest

from tests.harness import Cluster, NodeProcess, wait_until
from tests.stream_client import StreamClient

PUBLIC_RATE = 5             # API_PUBLIC_RATE here: bursts of two seconds' worth
WS_PER_ADDRESS = 2          # WS_MAX_CLIENTS_PER_ADDRESS here
PROXY = "127.0.0.1"         # the trusted proxy's address (the test's client connects from it)
STRANGER = "127.0.0.2"      # loopback too, so exempt, but not trusted to name anyone


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    cluster = Cluster(tmp_path_factory.mktemp("trusted-proxy"))
    try:
        node = cluster.node("n", p2p_enabled="false", api_trusted_proxies=f"{PROXY}/32",
                            api_public_rate=str(PUBLIC_RATE), ws_max_clients_per_address=str(WS_PER_ADDRESS))
        wait_until(lambda: node.status()["chain_id"], 10, message="the standalone node founds its chain")
        yield node
    finally:
        cluster.close()


async def _statuses(api_url: str, source: str, count: int, forwarded_for: str | None) -> list[int]:
    """`count` public reads from `source`, one after another, each with that X-Forwarded-For (if any)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as session:
        codes = []
        for _ in range(count):
            async with session.get(f"{api_url}/book/BTC-USD?depth=1", headers=headers) as response:
                await response.read()
                codes.append(response.status)
        return codes


def test_each_client_of_the_proxy_is_rate_limited_as_itself_and_nobody_else_can_name_one(node):
    async def scenario() -> None:
        url = node.api_url
        limited = await _statuses(url, PROXY, 4 * PUBLIC_RATE, "198.51.100.7")
        assert 429 in limited and limited.count(200) <= 3 * PUBLIC_RATE, limited
        # a client writing "I am local" before the proxy appends its address is the address the proxy saw
        assert (await _statuses(url, PROXY, 3, "127.0.0.1, 198.51.100.7")) == [429] * 3
        # another client of the same proxy has its own budget; the proxy's own requests are this machine's
        assert (await _statuses(url, PROXY, 2, "203.0.113.9")) == [200, 200]
        assert (await _statuses(url, PROXY, 4 * PUBLIC_RATE, None)) == [200] * 4 * PUBLIC_RATE
        # the header from anyone but the proxy names nobody: this one is loopback, exempt, and stays itself
        assert (await _statuses(url, STRANGER, 4 * PUBLIC_RATE, "198.51.100.7")) == [200] * 4 * PUBLIC_RATE
    asyncio.run(scenario())
    refused = node.status()["public_refused"]["addresses"]
    sources = {row["source"] for row in refused}
    assert "198.51.100.7" in sources and PROXY not in sources and STRANGER not in sources, refused


@pytest.mark.parametrize("forwarded_for, why", [("unknown", "not an IP address"), ("127.0.0.1", "loopback"),
                                                  ("198.51.100.7, ::1", "loopback")])
def test_a_proxy_naming_no_address_or_this_machine_gets_a_clear_400(node, forwarded_for, why):
    """A proxy that passes on what its client wrote would let the client claim to be this machine (exempt)."""
    async def scenario() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{node.api_url}/book/BTC-USD?depth=1",
                                   headers={"X-Forwarded-For": forwarded_for}) as response:
                return response.status, await response.json()
    status, body = asyncio.run(scenario())
    assert status == 400 and body["error"]["code"] == "bad_forwarded_for", body
    assert why in body["error"]["message"], body
    assert node.status()["chain_id"], "the node goes on"


def test_each_client_of_the_proxy_gets_its_own_stream_share(node):
    async def scenario() -> None:
        url = node.api_url
        mine = [await StreamClient.connect(url, headers={"X-Forwarded-For": "198.51.100.21"})
                for _ in range(WS_PER_ADDRESS)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await StreamClient.connect(url, headers={"X-Forwarded-For": "198.51.100.21"})
            assert refused.value.status == 429
            other = await StreamClient.connect(url, headers={"X-Forwarded-For": "198.51.100.22"})
            chan = await other.subscribe("book", market="BTC-USD")
            await other.wait_for(lambda: chan in other.data, timeout=10)
            await other.close()
        finally:
            for client in mine:
                await client.close()
    asyncio.run(scenario())
