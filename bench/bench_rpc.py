"""RPC throughput and latency between two processes on loopback: our RPC over real peer links, side by side
with a bare asyncio request/response baseline (the limit) and grenache-nodejs-http (Node client -> Node
worker through a real grape).

Rows, each at 1 (sequential) and 50 requests in flight, the same small JSON-able payload:
- `exchange-node request_peer`: two PeerManagers (Noise-encrypted links, heartbeats, batched
  writes) with the RPC layer, server in a child process, the client issuing requests in this process.
- `exchange-node request (routed)`: the same, through RpcService.request: AdaptiveRouter choice
  (P2C, breaker, AIMD limit), retry budget and client-side throttling on every request.
- `bare asyncio Protocol`: length-prefixed msgpack request/response, futures keyed by id, no
  handshake, schema checks, timeouts, counters or routing; the client joins the requests of one
  loop pass in one write, the server the answers to one chunk's requests.
- `grenache-nodejs-http`: bench/grenache_baseline.py (needs Node.js and `make npm-deps`).

"client CPU us/req" is this process's CPU time per request (the Python rows only): unlike req/s it
does not depend on what else the machine is running.
Variants are measured in interleaved rounds (3 rounds of 2 s; `--quick`: 1 round of 1 s; `--smoke`: 1 round
of 0.2 s) and the median round is shown, so drift on a shared machine hits every row alike.
Run: `python -m bench rpc [--quick | --smoke] [--seconds=S]`.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import struct
import tempfile
import time
from typing import Any, Awaitable, Callable

import msgpack

from bench.child import Child, get
from bench.options import sized
from bench.table import print_table
from node.configs import peer_config

PAYLOAD = {"op": "quote", "market": "BTC-USD", "side": "buy", "qty": "0.5"}
CONCURRENCY = (1, 50)
_HEADER = struct.Struct(">I")


# --- servers (child processes) -------------------------------------------------------------------
def _serve_ours(port_q: mp.Queue, data_dir: str) -> None:
    from config import load_settings
    from node.identity import NodeIdentity
    from p2p.peers import PeerManager
    from p2p.rpc.service import RpcConfig, RpcService

    async def main() -> None:
        settings = load_settings(env={}, cli={"data_dir": data_dir, "p2p_host": "127.0.0.1", "p2p_port": 0,
                                              "target_outbound": 0})
        peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                            node_id_for=NodeIdentity.node_id_for)
        rpc = peers.attach(RpcService(peers, RpcConfig(warmup_period=0)))
        rpc.register("echo", lambda payload, peer: payload)
        rpc.start()
        await peers.start()
        port_q.put((peers.listen_port, peers.node_id))
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_bare(port_q: mp.Queue) -> None:
    packb = msgpack.Packer(use_bin_type=True).pack
    unpackb = msgpack.unpackb
    header = _HEADER

    class Server(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            out = []
            pos = 0
            while len(buf) - pos >= 4:
                (size,) = header.unpack_from(buf, pos)
                if len(buf) - pos - 4 < size:
                    break
                request = unpackb(buf[pos + 4:pos + 4 + size])
                body = packb({"id": request["id"], "r": request["p"]})
                out.append(header.pack(len(body)) + body)
                pos += 4 + size
            del buf[:pos]
            if out:
                self.transport.write(b"".join(out))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
        port_q.put((server.sockets[0].getsockname()[1], None))
        await asyncio.Event().wait()

    asyncio.run(main())


class _BareClient(asyncio.Protocol):
    """Futures keyed by id; requests made in one loop pass leave in one write (like the link does)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pending: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.packb = msgpack.Packer(use_bin_type=True).pack
        self.out: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if len(buf) - pos - 4 < size:
                break
            answer = msgpack.unpackb(buf[pos + 4:pos + 4 + size])
            self.pending.pop(answer["id"]).set_result(answer["r"])
            pos += 4 + size
        del buf[:pos]

    def request(self, payload: Any) -> asyncio.Future:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        body = self.packb({"id": self.next_id, "p": payload})
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(_HEADER.pack(len(body)) + body)
        return future

    def _flush(self) -> None:
        out, self.out = self.out, []
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))


# --- load ----------------------------------------------------------------------------------------
async def drive(call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int, warmup: float = 0.3) -> dict:
    """Keep `concurrency` calls in flight for `seconds` (after `warmup`); requests/s and percentiles."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0

    async def worker(until: float, record: bool) -> None:
        nonlocal errors
        append = latencies.append
        while (t0 := clock()) < until:
            try:
                await call()
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
                continue
            if record:
                append(clock() - t0)

    await asyncio.gather(*(worker(clock() + warmup, False) for _ in range(concurrency)))
    started, cpu = clock(), time.process_time()
    await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
    elapsed, cpu = clock() - started, time.process_time() - cpu
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float | None:
        return latencies[min(n - 1, int(q * n))] * 1000.0 if n else None

    return {"requests": n, "errors": errors, "rps": n / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "cpu_us": cpu / n * 1e6 if n else None}


class OursClient:
    """The client side of our RPC: a PeerManager plus RpcService linked to the server process."""

    def __init__(self, port: int, server_id: str, data_dir: str) -> None:
        self.port, self.server_id, self.data_dir = port, server_id, data_dir

    async def __aenter__(self) -> "OursClient":
        from config import load_settings
        from node.identity import NodeIdentity
        from p2p.peers import PeerManager
        from p2p.rpc.service import RpcConfig, RpcService

        settings = load_settings(env={}, cli={"data_dir": self.data_dir, "p2p_host": "127.0.0.1", "p2p_port": 0,
                                              "target_outbound": 0})
        self.peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                                 node_id_for=NodeIdentity.node_id_for)
        self.rpc = self.peers.attach(RpcService(self.peers, RpcConfig(warmup_period=0)))
        self.rpc.start()
        await self.peers.start()
        await self.peers.dial("127.0.0.1", self.port)
        async with asyncio.timeout(5):
            while not self.rpc.providers("echo"):
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rpc.stop()
        await self.peers.stop()

    def request_peer(self) -> Awaitable[Any]:
        return self.rpc.request_peer(self.server_id, "echo", PAYLOAD)

    def request(self) -> Awaitable[Any]:
        return self.rpc.request("echo", PAYLOAD)


async def measure(ours_addr: tuple[int, str], bare_port: int, data_dir: str, seconds: float, rounds: int,
                  grenache_rig: Any) -> dict[tuple[str, int], list[dict]]:
    """Every variant once per round, rounds interleaved so machine drift hits all alike."""
    loop = asyncio.get_running_loop()
    transport, bare = await loop.create_connection(_BareClient, "127.0.0.1", bare_port)
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        async with OursClient(ours_addr[0], ours_addr[1], data_dir) as ours:
            variants = {"request_peer": ours.request_peer, "request": ours.request,
                        "bare": lambda: bare.request(PAYLOAD)}
            for _ in range(rounds):
                for concurrency in CONCURRENCY:
                    for name, call in variants.items():
                        results.setdefault((name, concurrency), []).append(await drive(call, seconds, concurrency))
                    if grenache_rig is not None:
                        stats = await asyncio.to_thread(grenache_rig.measure, seconds, concurrency)
                        results.setdefault(("grenache", concurrency), []).append(stats)
            results[("router", 0)] = [ours.rpc.snapshot()["services"]["echo"]["peers"][ours.server_id]]
    finally:
        transport.close()
    return results


def _median_run(runs: list[dict]) -> dict:
    """The run with the median requests/s (so its percentiles come from the same run)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def _start(target: Callable[..., None], *args: Any) -> tuple[Child, int, Any]:
    ctx = mp.get_context("fork")
    port_q = ctx.Queue()
    server = Child(ctx, target, port_q, *args)
    try:
        port, node_id = get(port_q, [server], 20, "the server's port")
    except BaseException:
        server.stop(5, terminate=True)
        raise
    return server, port, node_id


def main(argv: list[str]) -> int:
    from bench.grenache_baseline import NodeGrenacheRig, node_grenache_missing

    seconds, rounds = sized(argv, (2.0, 3), (1.0, 1), (0.2, 1))
    for i, arg in enumerate(argv):   # `--seconds=S` (`python -m bench` passes on only dashed words) or `--seconds S`
        if arg.startswith("--seconds"):
            value = arg.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
            seconds = min(max(float(value), 0.2), 30.0)
    missing = node_grenache_missing()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        ours, port, server_id = _start(_serve_ours, os.path.join(tmp, "server"))
        stack.callback(ours.stop, 5, True)
        bare_server, bare_port, _ = _start(_serve_bare)
        stack.callback(bare_server.stop, 5, True)
        rig = stack.enter_context(NodeGrenacheRig()) if missing is None else None
        results = asyncio.run(measure((port, server_id), bare_port, os.path.join(tmp, "client"), seconds, rounds,
                                      rig))
    med = {key: _median_run(runs) for key, runs in results.items() if key[0] != "router"}
    labels = {"request_peer": "exchange-node request_peer (link RPC)",
              "request": "exchange-node request (adaptive router)",
              "bare": "bare asyncio Protocol (the limit)", "grenache": "grenache-nodejs-http Node->Node"}
    rows = []
    for c in CONCURRENCY:
        for name, label in labels.items():
            s = med.get((name, c))
            if s is not None:
                rows.append([label, c, s["requests"], s["errors"], s["rps"], s["p50_ms"], s["p99_ms"],
                             "-" if s.get("cpu_us") is None else f"{s['cpu_us']:.1f}"])
    print_table(f"RPC request/response, two processes on loopback, median of {rounds} interleaved round(s) "
                f"of {seconds:g} s per row", ["variant", "in flight", "requests", "errors", "req/s", "p50 ms",
                                                "p99 ms", "client CPU us/req"], rows)
    if missing is not None:
        print(f"  grenache-nodejs-http rows skipped: {missing}")
    at = CONCURRENCY[-1]
    bare = med[("bare", at)]
    grenache = med.get(("grenache", at))
    print(f"\n  goals at {at} in flight (encrypted links):")
    for key, label in (("request_peer", "request_peer"), ("request", "request (routed)")):
        s = med[(key, at)]
        parts = [f"{s['rps'] / bare['rps']:.2f}x bare (goal >= 0.4)"]
        if grenache is not None:
            parts.insert(0, f"{s['rps'] / grenache['rps']:.1f}x grenache req/s (goal >= 5), p99 {s['p99_ms']:.2f} "
                            f"ms vs {grenache['p99_ms']:.2f} ms (goal: lower)")
        print(f"  - {label}: " + "; ".join(parts))
    router = results[("router", 0)][0]
    print(f"  router view of the server after the runs: score {router['score']}, latency {router['latency_ms']} ms, "
          f"breaker {router['breaker']}, AIMD concurrency limit {router['concurrency_limit']}")
    return 0
