"""Browser peers over WebTransport: what a session costs to open, to trade through and to keep.

    python -m bench browser [--quick | --smoke] [--sessions=200] [--window=10]

One node on loopback (its own chain, account rates off). The sessions come from the Python WebTransport client
(tests/wt_client.py, aioquic) standing in for a page; each table has its baseline measured in the same run:
- open to first book: connect, the session proof (`hello`), subscribe to the book, its snapshot; against the same
  over `/ws` (aiohttp WebSocket), p50/p99;
- an order to final: one IOC order signed by its own key, sent one at a time, over a session (`submit`) and through
  the Python client (`AsyncClient.place` with a `Signer`, HTTP), interleaved, p50/p99 and the ratio;
- node cost per session: the node's CPU and memory with `--sessions` sessions open (spread over 127.1.x.y so the
  per-address and per-/24 caps admit them) against the same window with none, idle and then each subscribed to the
  book while orders change it about 20 times a second. Idle is as the page is: following the headers, pinging when
  the node was silent a second or nothing was asked for 5 s; and, for comparison, pinging every second without
  headers.
- the page in a real headless Chromium (off the real interface, as the tests run it), opened from a file: from
  navigation to the first book shown, on loopback and through a UDP forwarder holding every datagram 50 ms each
  way (a site 100 ms of round trip away), p50/p99; and from a click on its order form to the order final (a limit
  order signed in WebCrypto, until its answer reaches the page), each after the same order through the Python
  client, on loopback and with both 50 ms each way from the node (the Python client's HTTP through a TCP
  forwarder holding every chunk as long), with where the page's time goes (signing; the session, node and block);
  and one request's round trip over a session from the page against the Python WebTransport client.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import threading
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from bench.options import parse_options, percentile
from bench.table import print_table
from exchange.app.txs import NewOrderOp, sign_tx
from exchange.crypto import SigningKey
from exchange_node_client import AsyncClient, Client, Signer
from tests.harness import ROOT, Cluster, NodeProcess, cpu_seconds, rss_kib, wait_until
from tests.wt_client import BrowserClient

UNMETERED: dict[str, Any] = {"max_open_orders": 0, "account_ops_per_block": 0, "account_ops_per_100_blocks": 0,
             "account_ops_rate": 0, "group_ops_rate": 0, "api_connection_rate": 0}
PER_ADDRESS = 8           # the endpoint's caps: 8 sessions per address, 32 per /24
PER_SUBNET = 32
CHROMIUM = "/usr/bin/chromium"
PAGE = ROOT / "node" / "console" / "static" / "p2p.html"
OFF_NETWORK = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


class DelayForwarder(asyncio.DatagramProtocol):
    """Forwards UDP from any client to `target`, and back, holding every datagram `delay` seconds each way."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self.waiting: dict[tuple[str, int], list[bytes]] = {}      # a client's datagrams while its upstream opens
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        upstream = self.upstreams.get(addr)
        if upstream is not None:
            loop.call_later(self.delay, upstream.sendto, data)
        elif addr in self.waiting:
            self.waiting[addr].append(data)
        else:
            self.waiting[addr] = [data]
            task = loop.create_task(self._open(addr))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _open(self, client: tuple[str, int]) -> None:
        forwarder = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _addr: tuple[str, int]) -> None:
                assert forwarder.transport is not None
                asyncio.get_running_loop().call_later(forwarder.delay, forwarder.transport.sendto, data, client)
        upstream, _ = await asyncio.get_running_loop().create_datagram_endpoint(Back, remote_addr=self.target)
        self.upstreams[client] = upstream
        for data in self.waiting.pop(client):
            asyncio.get_running_loop().call_later(self.delay, upstream.sendto, data)


class DelayTcpForwarder:
    """Forwards TCP connections to `target`, holding every chunk `delay` seconds each way (in order)."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
        delivering = asyncio.create_task(deliver())
        while chunk := await reader.read(65536):
            queue.put_nowait((time.monotonic() + self.delay, chunk))
        queue.put_nowait((time.monotonic() + self.delay, b""))
        await delivering


WAIT_FOR = """([selector, within]) => new Promise((resolve, reject) => {
  if (document.querySelector(selector)) return resolve();
  const watch = new MutationObserver(() => {
    if (document.querySelector(selector)) { watch.disconnect(); resolve(); }
  });
  watch.observe(document.querySelector(within), { childList: true, subtree: true, attributes: true,
    characterData: true });
  setTimeout(() => { watch.disconnect(); reject(new Error(`no ${selector} within 20 s`)); }, 20000);
})"""


def _page_orders(context: Any, node: NodeProcess, url: str, cert: str, count: int,
                 api_url: str | None = None) -> dict[str, list[float]]:
    """Seconds from the click to final of `count` orders placed one at a time in one page (its own figure,
    `data-final-ms`: signing in WebCrypto, the session, the block, until the answer is in the page; with its parts
    `data-sign-ms` and `data-wire-ms`), each after one through the Python client (at `api_url`: the node's own API
    unless given)."""
    times: dict[str, list[float]] = {"Python client, HTTP (baseline)": [], "the page in Chromium": [],
                                     "  of which signing (WebCrypto)": [],
                                     "  of which the session, node and block": []}
    python = Client(api_url or node.api_url or "", node.api_token, signer=Signer.generate())
    page = context.new_page()
    page.goto(PAGE.as_uri() + f"#node={url}&hash={cert}&id={node.node_id}")
    page.wait_for_function("document.body.dataset.firstBookMs", timeout=20_000)
    for _ in range(count):
        started = time.perf_counter()
        answer = python.place("BTC-USD", "buy", "0.01", price="100", wait=10)      # a limit order, as the page's
        assert answer.final, answer
        times["Python client, HTTP (baseline)"].append(time.perf_counter() - started)
        page.evaluate("document.getElementById('order-result').textContent = ''")
        page.fill("#order-price", "100")
        page.fill("#order-qty", "0.01")
        page.click("#order-form button")
        # waits that look again only when the page changes (WAIT_FOR): polling every frame, or from here every few
        # ms, keeps the page's main thread busy and its order measurably slower
        page.evaluate(WAIT_FOR, ["#order-result:not(:empty)", "#order-result"])
        order_id = page.inner_text("#order-result").split()[0]
        row = f'#orders tr[data-order-id="{order_id}"]:not([data-final-ms=""])'
        page.evaluate(WAIT_FOR, [row, "#orders"])
        for name, attribute in (("the page in Chromium", "data-final-ms"), ("  of which signing (WebCrypto)",
                                "data-sign-ms"), ("  of which the session, node and block", "data-wire-ms")):
            times[name].append(float(page.get_attribute(row, attribute) or "nan") / 1000)
    page.evaluate("closeLinks()")
    page.close()
    python.close()
    return times


ROUND_TRIP = """async (count) => {        // a `nodes` request (answered by the session itself) over the page's link
  const link = state.links.find((l) => l.state === "up");
  const times = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await link.request({ event: "nodes" });
    times.push(performance.now() - started);
  }
  return times;
}"""


def _round_trips(context: Any, url: str, cert: str, node_id: str, count: int,
                 loop: asyncio.AbstractEventLoop) -> dict[str, list[float]]:
    """Seconds for one request over a session and its answer: the Python WebTransport client, then the page."""
    async def python() -> list[float]:
        client = BrowserClient()
        await client.open(url)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await client.request({"event": "nodes"})
            times.append(time.perf_counter() - started)
        await client.close()
        return times
    times = {"Python WebTransport client (baseline)": asyncio.run_coroutine_threadsafe(python(), loop).result(60)}
    page = context.new_page()
    page.goto(PAGE.as_uri() + f"#node={url}&hash={cert}&id={node_id}")
    page.wait_for_function("document.body.dataset.firstBookMs", timeout=20_000)
    times["the page in Chromium"] = [ms / 1000 for ms in page.evaluate(ROUND_TRIP, count)]
    page.evaluate("closeLinks()")
    page.close()
    return times


def _in_chromium(node: NodeProcess, url: str, cert: str, count: int,
                 delay: float) -> tuple[dict[str, list[float]], ...]:
    """Seconds from navigation to the first book shown, opening the page `count` times, direct and through the
    forwarder (the page's own figure, `data-first-book-ms`); then `_page_orders`, direct and with the page and the
    Python client both `delay` each way from the node."""
    node_id = node.node_id
    from playwright.sync_api import sync_playwright

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = int(url.split(":")[2].split("/")[0])

    async def forwarder() -> int:
        transport, _ = await loop.create_datagram_endpoint(lambda: DelayForwarder(("127.0.0.1", port), delay),
                                                           local_addr=("127.0.0.1", 0))
        return int(transport.get_extra_info("sockname")[1])
    delayed = asyncio.run_coroutine_threadsafe(forwarder(), loop).result(10)
    api = (node.api_url or "").rsplit(":", 1)
    tcp = DelayTcpForwarder((api[0].split("//")[1], int(api[1])), delay)
    asyncio.run_coroutine_threadsafe(tcp.start(), loop).result(10)
    targets = {"loopback": url, f"{1000 * delay:g} ms each way": url.replace(f":{port}/", f":{delayed}/")}
    times: dict[str, list[float]] = {name: [] for name in targets}
    with tempfile.TemporaryDirectory(prefix="bench-browser-profile-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=OFF_NETWORK)
        try:
            for _ in range(count):
                for name, target in targets.items():
                    page = context.new_page()
                    page.goto(PAGE.as_uri() + f"#node={target}&hash={cert}&id={node_id}")
                    page.wait_for_function("document.body.dataset.firstBookMs", timeout=20_000)
                    times[name].append(float(page.evaluate("document.body.dataset.firstBookMs")) / 1000)
                    page.evaluate("closeLinks()")        # frees the node's slot at once (a closed tab: 10 s later)
                    page.close()
            orders = _page_orders(context, node, url, cert, count)
            far = _page_orders(context, node, targets[f"{1000 * delay:g} ms each way"], cert, count,
                               api_url=f"http://127.0.0.1:{tcp.port}")
            trips = _round_trips(context, url, cert, node_id, 5 * count, loop)
        finally:
            context.close()
            loop.call_soon_threadsafe(loop.stop)
    return times, orders, far, trips


async def _open_wt(url: str) -> float:
    started = time.perf_counter()
    client = BrowserClient()
    try:
        await client.open(url)
        await client.hello()
        await client.request({"event": "subscribe", "channel": "book", "market": "BTC-USD"})
        snapshot = await client.next_event(10)
        assert snapshot.get("type") == "snapshot", snapshot
        return time.perf_counter() - started
    finally:
        await client.close()


async def _open_ws(session: aiohttp.ClientSession, api: str) -> float:
    started = time.perf_counter()
    async with session.ws_connect(api.replace("http", "ws") + "/ws") as ws:
        await ws.send_json({"event": "subscribe", "channel": "book", "market": "BTC-USD"})
        async for message in ws:
            if message.json().get("type") == "snapshot":
                return time.perf_counter() - started
    raise AssertionError("the stream closed before its snapshot")


async def _opens(node: NodeProcess, url: str, count: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"/ws (baseline)": [], "WebTransport session": []}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            times["/ws (baseline)"].append(await _open_ws(session, node.api_url or ""))
            times["WebTransport session"].append(await _open_wt(url))
    return times


async def _orders(node: NodeProcess, url: str, count: int) -> dict[str, list[float]]:
    chain_id = node.status()["chain_id"]
    key = SigningKey(os.urandom(32))
    times: dict[str, list[float]] = {"Python client, HTTP (baseline)": [], "WebTransport session": []}
    client = BrowserClient()
    await client.open(url)
    async with AsyncClient(node.api_url or "", node.api_token, signer=Signer.generate()) as python:
        for i in range(count):
            started = time.perf_counter()
            answer = await python.place("BTC-USD", "buy", "0.01", price="100", type="ioc", wait=10)
            assert answer.final, answer
            times["Python client, HTTP (baseline)"].append(time.perf_counter() - started)
            tx = sign_tx(key.sign, key.public_key, chain_id, f"b{i}", int(time.time() * 1000) + 60_000,
                         [NewOrderOp("BTC-USD", "buy", "ioc", "100", "0.01", None)])
            started = time.perf_counter()
            result = await client.request({"event": "submit", "signed": dict(tx.as_json())})
            assert result.get("final"), result
            times["WebTransport session"].append(time.perf_counter() - started)
    await client.close()
    return times


def _local_hosts(count: int) -> list[str]:
    """Source addresses for `count` sessions within the caps: PER_ADDRESS on each, PER_SUBNET in each /24."""
    per_subnet = PER_SUBNET // PER_ADDRESS
    return [f"127.1.{(i // PER_ADDRESS) // per_subnet}.{(i // PER_ADDRESS) % per_subnet + 1}" for i in range(count)]


async def _window(pid: int, seconds: float, tick: Callable[[], Awaitable[None]] | None = None) -> tuple[float, int]:
    """CPU seconds the node used over `seconds` and its RSS (KiB) at the end; `tick` runs every 50 ms meanwhile."""
    before = cpu_seconds(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if tick is not None:
            await tick()
        await asyncio.sleep(0.05)
    return cpu_seconds(pid) - before, rss_kib(pid)


async def _cost(node: NodeProcess, url: str, sessions: int, seconds: float) -> list[list[Any]]:
    assert node.proc is not None
    pid = node.proc.pid
    base_cpu, base_rss = await _window(pid, seconds)
    clients: list[BrowserClient] = []
    pinging = True

    async def ping() -> None:       # from the first session opened: opening 200 on a loaded machine can take longer
        while pinging:              # than a session may stay silent
            for client in clients:
                client.send({"event": "ping"})
            await asyncio.sleep(1.0)
    pinger = asyncio.create_task(ping())
    for host in _local_hosts(sessions):
        client = BrowserClient()
        await client.open(url, local_host=host)
        await client.hello()
        clients.append(client)
    held = node.get("/status")["browser"]["connections"]
    assert held == sessions, f"{held} of {sessions} sessions admitted"
    ping_cpu, ping_rss = await _window(pid, seconds)
    pinging = False
    await pinger
    for client in clients:
        client.send({"event": "headers"})
    as_page = True

    async def keep() -> None:          # the page's rule: a ping when silent for 1 s or nothing asked for 5 s
        asked = {id(client): time.monotonic() for client in clients}
        while as_page:
            now = time.monotonic()
            for client in clients:
                heard = not client.other.empty()
                while not client.other.empty():
                    client.other.get_nowait()
                if not heard or now - asked[id(client)] >= 5.0:
                    client.send({"event": "ping"})
                    asked[id(client)] = now
            await asyncio.sleep(1.0)
    keeper = asyncio.create_task(keep())
    idle_cpu, idle_rss = await _window(pid, seconds)
    for client in clients:
        await client.request({"event": "subscribe", "channel": "book", "market": "BTC-USD"})
    prices = iter(range(10**9))
    async with AsyncClient(node.api_url or "", node.api_token, signer=Signer.generate()) as trader:
        async def order() -> None:      # one resting order a tick, at a price that changes the top 25 levels
            await trader.place("BTC-USD", "buy", "0.01", price=str(90 + next(prices) % 9), wait=0)
        stream_cpu, stream_rss = await _window(pid, seconds, order)
    as_page = False
    await keeper
    for client in clients:
        await client.close()
    rows = []
    for name, cpu, rss in (("idle, as the page (headers, pings when silent)", idle_cpu, idle_rss),
                           ("idle, a ping a second, no headers", ping_cpu, ping_rss),
                           ("book stream, ~20 updates/s", stream_cpu, stream_rss)):
        share = 100 * (cpu - base_cpu) / seconds / sessions
        rows.append([name, sessions, 100 * base_cpu / seconds, 100 * cpu / seconds, share,
                     (rss - base_rss) / sessions])
    return rows


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"opens": 50, "orders": 40, "sessions": 200, "window": 10.0, "pages": 20},
                         quick={"opens": 20, "orders": 20, "sessions": 100, "window": 5.0, "pages": 8},
                         smoke={"opens": 2, "orders": 2, "sessions": 8, "window": 0.5, "pages": 1})
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as base:
        cluster = Cluster(Path(base))
        try:
            node = cluster.node("n", found_after=0, log_level="WARNING", browser_webtransport="true", **UNMETERED)
            wait_until(lambda: node.status()["chain_id"], 10, message="the node founds its chain")
            url = node.get("/status")["browser"]["webtransport"]
            opens = asyncio.run(_opens(node, url, opts["opens"]))
            orders = asyncio.run(_orders(node, url, opts["orders"]))
            cost = asyncio.run(_cost(node, url, opts["sessions"], opts["window"]))
            browser = node.get("/status")["browser"]
            pages = _in_chromium(node, url, browser["cert_sha256"][0], opts["pages"], 0.05) \
                if shutil.which(CHROMIUM) else None
        finally:
            cluster.close()

    def rows(times: dict[str, list[float]]) -> list[list[Any]]:
        base_p50 = statistics.median(next(iter(times.values())))
        return [[name, len(v), 1000 * percentile(v, 0.5), 1000 * percentile(v, 0.99), statistics.median(v) / base_p50]
                for name, v in times.items()]
    print_table(f"open to first book snapshot on loopback, one at a time ({opts['opens']} each, interleaved)",
                ["path", "n", "p50 ms", "p99 ms", "p50 ratio"], rows(opens))
    print_table(f"an order signed by its own key to final, one at a time ({opts['orders']} each, interleaved)",
                ["path", "n", "p50 ms", "p99 ms", "p50 ratio (goal <= 1.2)"], rows(orders))
    print_table(f"node cost per browser session: {opts['window']:g} s windows against the same window with none",
                ["sessions", "n", "node CPU % none", "node CPU % with", "% of a core each (goal <= 0.1 idle)",
                 "KiB each (goal <= 100 idle)"], cost)
    if pages is None:
        print(f"\n(no {CHROMIUM}: the page in a browser is not measured)")
    else:
        opened, ordered, far, trips = pages
        print_table(f"the page in headless Chromium, opened from a file: navigation to the first book shown "
                    f"({opts['pages']} each, interleaved)", ["between page and node", "n", "p50 ms", "p99 ms",
                                                             "p50 ratio (goal: <= 1 s at 50 ms)"], rows(opened))
        print_table(f"one request and its answer over a session on loopback ({5 * opts['pages']} each): where the "
                    f"page's transport stands", ["client", "n", "p50 ms", "p99 ms", "p50 ratio"], rows(trips))
        for where, times in (("on loopback", ordered), ("both 50 ms each way from the node", far)):
            print_table(f"an order from the page (click to final, signed in WebCrypto) against the Python client, "
                        f"{where} ({opts['pages']} each, interleaved)",
                        ["path", "n", "p50 ms", "p99 ms", "p50 ratio (goal <= 1.2)"], rows(times))
