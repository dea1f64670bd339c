"""Real process (issue 25): 1,000 slowloris connections to the control API (headers fed a byte at a time,
never finished) from one address: the guard admits that address's share (API_MAX_CONNECTIONS_PER_ADDRESS)
and refuses the rest at once, cuts the admitted ones when their header deadline passes, and an honest
client from another address is answered throughout."""
from __future__ import annotations

import asyncio
import http.client
import re
import time
import urllib.request

from tests.harness import wait_until

SLOW = 1_000
SHARE = 200
DEADLINE = 3.0


async def _slowloris(host: str, port: int) -> tuple[list[asyncio.StreamWriter], int]:
    """Open SLOW connections and start a request on each; returns the open ones and how many were refused."""
    writers, refused = [], 0
    for _ in range(SLOW):
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0))
        except OSError:
            refused += 1
            continue
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        writers.append(writer)
    return writers, refused


async def _still_open(writers: list[asyncio.StreamWriter]) -> int:
    """Feed each a byte of header; count those the node has not closed."""
    for writer in writers:
        if not writer.is_closing():
            writer.write(b"X")
    await asyncio.sleep(0)
    alive = 0
    for writer in writers:
        try:
            await asyncio.wait_for(writer.drain(), 1)
            reader = writer._protocol._stream_reader     # type: ignore[attr-defined]
            if not reader.at_eof():
                alive += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass
    return alive


def _honest_answer(host: str, port: int) -> int:
    """GET /metrics from another address (127.0.1.9) than the attacker's."""
    connection = http.client.HTTPConnection(host, port, timeout=5, source_address=("127.0.1.9", 0))
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().status
    finally:
        connection.close()


def test_slowloris_connections_are_refused_over_the_share_and_cut_at_the_header_deadline(cluster):
    node = cluster.node("n", p2p_enabled="false", api_max_connections_per_address=SHARE,
                        api_header_timeout=DEADLINE)
    host, port = node.api_url.rsplit("//", 1)[1].rsplit(":", 1)

    async def attack() -> None:
        started = time.monotonic()
        writers, _ = await _slowloris(host, int(port))
        await asyncio.sleep(0.5)
        admitted = await _still_open(writers)
        assert admitted <= SHARE, f"{admitted} slow connections held open from one address (share {SHARE})"
        assert await asyncio.to_thread(_honest_answer, host, int(port)) == 200, "an honest client is answered"
        while time.monotonic() - started < DEADLINE + 5 and await _still_open(writers):
            await asyncio.sleep(0.5)
        left = await _still_open(writers)
        assert left == 0, f"{left} slow connections still open {time.monotonic() - started:.1f}s in"
        for writer in writers:
            writer.close()

    asyncio.run(attack())
    with urllib.request.urlopen(node.api_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    refused = {m.group(1): float(m.group(2)) for m in
               re.finditer(r'^exchange_node_api_connections_refused_total\{reason="(\w+)"\} (\S+)$', metrics, re.M)}
    assert refused.get("refused_per_address", 0) >= SLOW - SHARE - 5 and refused.get("header_timeouts", 0) >= 1, refused
    wait_until(lambda: node.status() is not None, 5)
