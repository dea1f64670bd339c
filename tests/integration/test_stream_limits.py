"""Real process (issue 25): one client opening 2,000 WebSockets from one address gets its share (50 by
default; the rest 429 with Retry-After) and never the slots everyone shares: a client from another
network still connects and subscribes, and the refusals are counted in /status."""
from __future__ import annotations

import re
import urllib.request

import aiohttp

ATTEMPTS = 2_000


async def _open(url: str, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse | int:
    try:
        return await session.ws_connect(url)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_one_address_opening_two_thousand_websockets_leaves_room_for_everyone_else(cluster):
    node = cluster.node("n", p2p_enabled="false")
    url = node.api_url.replace("http", "ws", 1) + "/ws"
    hog = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.1", 0), limit=0))
    opened: list[aiohttp.ClientWebSocketResponse] = []
    refused: dict[int, int] = {}
    try:
        for _ in range(ATTEMPTS):
            result = await _open(url, hog)
            if isinstance(result, int):
                refused[result] = refused.get(result, 0) + 1
            else:
                opened.append(result)
        assert len(opened) == 50 and refused == {429: ATTEMPTS - 50}, (len(opened), refused)
        # another network (127.0.1.0/24) still gets a stream and its data
        other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.1.7", 0)))
        try:
            ws = await other.ws_connect(url)
            assert (await ws.receive_json())["event"] == "info"
            await ws.send_json({"event": "subscribe", "channel": "book", "market": "BTC-USD"})
            answer = await ws.receive_json()
            assert answer["event"] == "subscribed", answer
            await ws.close()
        finally:
            await other.close()
        with urllib.request.urlopen(node.api_url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        counted = re.search(r"^exchange_node_stream_refused_per_source_total (\S+)$", metrics, re.M)
        assert counted is not None and float(counted.group(1)) == ATTEMPTS - 50, counted
    finally:
        for ws in opened:
            await ws.close()
        await hog.close()
