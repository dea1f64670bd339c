"""Real processes: 64 keep-alive connections of one address flood the control API's public routes far past the
address's rate, each writing its GETs back to back, while a reader from another network asks for the book five
times a second.

Refused after routing, every GET was parsed, routed, walked through every middleware and answered a fresh JSON
error: 99.8 % refused, and the refusals took 98 % of the node's CPU (honest p50 x4.7). The front gate refuses
before routing with a prebuilt answer and closes a connection refused 8 times in a row, so what it pipelined
behind is never read; the node then pays an accept per eight refusals instead of a request's whole path for each,
and the address's next connections are refused at accept until its bucket refills (FrontGate.shut).
Loopback is not exempt here (API_RATE_EXEMPT names another network).
"""
from __future__ import annotations

import asyncio
import http.client
import threading
import time
from urllib.parse import urlsplit

from tests.flood import quantile
from tests.harness import cpu_seconds, wait_until

ATTACKER, HONEST = "127.0.1.1", "127.0.2.1"       # two /24s of the loopback network
CONNECTIONS, PIPELINED, SECONDS = 64, 200, 5.0


async def _flood(host: str, port: int) -> tuple[int, int]:
    """Each connection writes PIPELINED GETs at once and reads their answers, then writes again, on a new
    connection whenever the node closes it, for SECONDS; the GETs written and the 429s read."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED
    deadline = time.monotonic() + SECONDS
    sent = refused = 0

    async def connection() -> None:
        nonlocal sent, refused
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
            try:
                while time.monotonic() < deadline:
                    writer.write(request)
                    sent += PIPELINED
                    answered = 0
                    while answered < PIPELINED and (chunk := await asyncio.wait_for(reader.read(1 << 16), 10)):
                        answered += chunk.count(b"HTTP/1.1 ")
                        refused += chunk.count(b"HTTP/1.1 429 ")
                    if answered < PIPELINED:
                        break                       # closed by the node: a new connection
            except (ConnectionError, asyncio.TimeoutError):
                pass
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return sent, refused


def _reader(host: str, port: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """GET /book five times a second from HONEST's address, each on a connection of its own, timed."""
    while not stop.is_set():
        started = time.monotonic()
        connection = http.client.HTTPConnection(host, port, timeout=20, source_address=(HONEST, 0))
        connection.request("GET", "/book/BTC-USD?depth=10")
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.status == 200, response.status
        samples.append((started, time.monotonic() - started))
        stop.wait(max(0.0, 0.2 - (time.monotonic() - started)))


def test_a_keep_alive_flood_of_refused_gets_costs_the_node_little_and_an_honest_reader_nothing(cluster):
    (node,) = cluster.chain(1, api_rate_exempt="192.0.2.0/24", heartbeat_interval=0.2)
    parts = urlsplit(node.api_url)
    host, port = parts.hostname, parts.port
    assert host is not None and port is not None and node.proc is not None
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(host, port, samples, stop), daemon=True)
    reader.start()
    try:
        wait_until(lambda: len(samples) >= 20, 30, interval=0.1, message="the honest baseline")
        cpu_before, flood_start = cpu_seconds(node.proc.pid), time.monotonic()
        sent, refused = asyncio.run(_flood(host, port))
        flood_end, cpu = time.monotonic(), cpu_seconds(node.proc.pid) - cpu_before
    finally:
        stop.set()
        reader.join(30)
    rows = node.status()["public_refused"]["addresses"]
    reasons: dict[str, int] = next((row["reasons"] for row in rows if row["source"] == ATTACKER), {})
    at_accept = reasons.get("api_connections_shut", 0)
    base = [latency for at, latency in samples if at < flood_start]
    during = [latency for at, latency in samples if flood_start <= at < flood_end]
    print(f"\n{sent} GETs written, {refused} answered 429; node CPU {cpu:.2f} s over {flood_end - flood_start:.1f} s "
          f"({cpu / max(1, refused) * 1e6:.0f} us per 429 read, {cpu / max(1, sent) * 1e6:.1f} us per GET written); "
          f"honest p50 {quantile(base, 0.5) * 1000:.0f} -> {quantile(during, 0.5) * 1000:.0f} ms, p99 "
          f"{quantile(base, 0.99) * 1000:.0f} -> {quantile(during, 0.99) * 1000:.0f} ms ({len(during)} reads); "
          f"{at_accept} connections refused at accept")
    assert refused > 1_000 and during
    # Measured on this 2-core machine (the flooder in this process, others' tests beside it): 4.5 us of the node's
    # CPU per GET written and 111 us per 429 answered (a connection is closed after 8 in a row: what it pipelined
    # behind is never parsed, and the rest is the accept of the next connection), honest p50 2 -> 34 ms; refused
    # after routing, 109 us per GET written, every one answered, honest p50 4 -> 61 ms.
    assert cpu / sent <= 20e-6, f"{cpu / sent * 1e6:.0f} us of the node's CPU per GET written"
    assert quantile(during, 0.5) <= max(2 * quantile(base, 0.5), 0.1), "honest p50 during the flood"
    assert quantile(during, 0.99) <= max(2 * quantile(base, 0.99), 0.25), "honest p99 during the flood"
