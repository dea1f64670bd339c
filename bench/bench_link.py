"""Link benchmark: frame codec rate, one-way link throughput of the encrypted link against a bare
plaintext asyncio baseline, handshake time, and idle memory per connected peer.

Every throughput row uses two processes (sender, receiver), the same ~200-byte order message,
length-prefixed msgpack and the same batching on the sender (join frames written in one loop
pass); the baseline has no protocol logic: no handshake, encryption, schema checks, counters or
dispatch. Rows are interleaved in rounds so machine drift hits all alike; medians are reported.
Handshake time: one process dials another `HANDSHAKES` times in a row (TCP connect to open link:
Noise XX, hellos and acks).
`python -m bench link [--quick | --smoke]` (`--smoke`: tiny counts, only checks that every table runs).
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import struct
import tempfile
import time
from typing import Any

import msgpack

from bench.child import Child, get
from bench.options import sized
from bench.table import print_table
from tests.harness import rss_kib
from p2p.framing import FrameDecoder, encode_frame
from node.configs import peer_config

ORDER = {"type": "bench_order", "id": "9f1c2a7e5b3d4f60a1b2c3d4e5f60718", "origin": "a" * 40, "ts": 1795341650.3984764,
         "market": "BTC-USD", "side": "buy", "kind": "limit", "price": 10005123, "qty": 15000, "seq": 123456,
         "lamport": 987654, "account": "acct-42"}
BATCH = 256
HANDSHAKES = 200


def codec_rate(seconds: float = 1.0) -> tuple[float, int]:
    frame = encode_frame(ORDER)
    decoder = FrameDecoder()
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = b"".join(encode_frame(ORDER) for _ in range(1000))
        count += len(decoder.feed(chunk))
    return count / (time.perf_counter() - started), len(frame)


# --- receivers (child processes) -------------------------------------------------------------
def _bare_receiver(port_q: mp.Queue, result_q: mp.Queue, total: int) -> None:
    async def main() -> None:
        done = asyncio.get_running_loop().create_future()

        class Receiver(asyncio.Protocol):
            def __init__(self) -> None:
                self.buf = bytearray()
                self.count = 0
                self.first = 0.0

            def data_received(self, data: bytes) -> None:
                if not self.first:
                    self.first = time.perf_counter()
                buf = self.buf
                buf += data
                pos, end = 0, len(buf)
                while end - pos >= 4:
                    (length,) = struct.unpack_from(">I", buf, pos)
                    if end - pos - 4 < length:
                        break
                    msgpack.unpackb(bytes(buf[pos + 4:pos + 4 + length]), raw=False)
                    pos += 4 + length
                    self.count += 1
                del buf[:pos]
                if self.count >= total and not done.done():
                    done.set_result(time.perf_counter() - self.first)

        server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", 0)
        port_q.put(server.sockets[0].getsockname()[1])
        result_q.put(await done)
        server.close()

    asyncio.run(main())


def _settings(tmp: str, **extra):
    from config import load_settings
    return load_settings(env={}, cli={"data_dir": tmp, "p2p_host": "127.0.0.1", "p2p_port": 0, "target_outbound": 0,
                                      "max_peers": 300, **extra})


def _manager(tmp: str, **extra):
    from node.identity import NodeIdentity
    from p2p.peers import PeerManager
    return PeerManager(peer_config(_settings(tmp, **extra)), NodeIdentity.generate(), verify=NodeIdentity.verify,
                       node_id_for=NodeIdentity.node_id_for)


def _register_bench_type(manager: Any) -> None:
    from p2p import messages as m
    fields = {"id": m.is_str(64), "origin": m.is_node_id, "ts": m.is_number, "price": m.is_int(), "qty": m.is_int()}
    manager.schemas.add({"bench_order": m.schema(fields)})


def _run(main, use_uvloop: bool = False) -> Any:
    if use_uvloop:
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def _link_receiver(port_q: mp.Queue, result_q: mp.Queue, total: int, use_uvloop: bool = False) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            manager = _manager(tmp)
            _register_bench_type(manager)
            done = asyncio.get_running_loop().create_future()
            state = {"count": 0, "first": 0.0}

            def on_message(link, message) -> None:
                if not state["first"]:
                    state["first"] = time.perf_counter()
                state["count"] += 1
                if state["count"] >= total and not done.done():
                    done.set_result(time.perf_counter() - state["first"])

            from p2p.peer_hooks import PeerHooks
            manager.attach(PeerHooks("bench", application=on_message))
            await manager.start()
            port_q.put(manager.listen_port)
            result_q.put(await done)
            await asyncio.sleep(0.2)
            await manager.stop()

    _run(main(), use_uvloop)


def _link_sender(port: int, total: int, result_q: mp.Queue, use_uvloop: bool = False) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            manager = _manager(tmp)
            _register_bench_type(manager)
            await manager.start()
            link = await manager.dial("127.0.0.1", port)
            sent = 0
            while sent < total:
                n = min(BATCH, total - sent)
                for _ in range(n):
                    link.send(ORDER)
                sent += n
                await asyncio.sleep(0)  # let the link flush this pass's frames in one write
                await link.drain()
            await asyncio.get_running_loop().run_in_executor(None, result_q.get, True, 120)  # wait: receiver done
            await manager.stop()

    _run(main(), use_uvloop)


# --- senders (in the bench process) ----------------------------------------------------------
async def _bare_send(port: int, total: int, result_q: mp.Queue, receiver: Child) -> float:
    """The receiver's elapsed time; the sender stays connected until the receiver has it all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while sent < total:
        n = min(BATCH, total - sent)
        writer.write(b"".join(encode_frame(ORDER) for _ in range(n)))
        sent += n
        await writer.drain()
    elapsed = await asyncio.to_thread(get, result_q, [receiver], 120, "the receiver's time")
    writer.close()
    return elapsed


def throughput(kind: str, total: int) -> float:
    """kind: "bare", "link" (encrypted) or "link-uvloop" (both processes on uvloop)."""
    ctx = mp.get_context("spawn")
    port_q, result_q, done_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    uv = kind == "link-uvloop"
    if kind == "bare":
        receiver = Child(ctx, _bare_receiver, port_q, result_q, total)
    else:
        receiver = Child(ctx, _link_receiver, port_q, result_q, total, uv)
    children = [receiver]
    try:
        port = get(port_q, children, 30, "the receiver's port")
        if kind == "bare":
            elapsed = _run(_bare_send(port, total, result_q, receiver))
        else:
            children.append(Child(ctx, _link_sender, port, total, done_q, uv))
            elapsed = get(result_q, children, 120, "the receiver's time")
            done_q.put(True)
    finally:
        for child in reversed(children):
            child.stop()
    return total / elapsed


# --- handshake time --------------------------------------------------------------------------
def _listener(port_q: mp.Queue, stop_q: mp.Queue) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            manager = _manager(tmp, max_peers=1000)
            await manager.start()
            port_q.put(manager.listen_port)
            await asyncio.get_running_loop().run_in_executor(None, stop_q.get)
            await manager.stop()

    asyncio.run(main())


def _dialler(port: int, count: int, result_q: mp.Queue) -> None:
    async def main() -> None:
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            manager = _manager(tmp)
            await manager.start()
            for _ in range(count):
                started = time.perf_counter()
                link = await manager.dial("127.0.0.1", port)
                times.append(time.perf_counter() - started)
                link.close("bench_done")
                await link.lost
            await manager.stop()
        result_q.put(times)

    asyncio.run(main())


def handshake_times(count: int) -> list[float]:
    ctx = mp.get_context("spawn")
    port_q, stop_q, result_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    children = [Child(ctx, _listener, port_q, stop_q)]
    try:
        port = get(port_q, children, 30, "the listener's port")
        children.append(Child(ctx, _dialler, port, count, result_q))
        times = get(result_q, children, 120, "the dialler's times")
    finally:
        stop_q.put("stop")
        for child in reversed(children):
            child.stop()
    return sorted(times)


# --- memory per peer -------------------------------------------------------------------------
def _hub(kind: str, port_q: mp.Queue, cmd_q: mp.Queue) -> None:
    stack = contextlib.ExitStack()

    async def main() -> None:
        if kind == "bare":
            class Sink(asyncio.Protocol):
                def data_received(self, data: bytes) -> None:
                    pass
            server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
            port_q.put(server.sockets[0].getsockname()[1])
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            manager = _manager(tmp)
            await manager.start()
            port_q.put(manager.listen_port)
        await asyncio.get_running_loop().run_in_executor(None, cmd_q.get)

    with stack:
        asyncio.run(main())


async def _open_clients(kind: str, port: int, n: int, hold: float) -> int:
    """Open n links to the hub and hold them idle (heartbeats keep flowing) for `hold` seconds."""
    if kind == "bare":
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
        await asyncio.sleep(hold)
        for _, writer in conns:
            writer.close()
        return len(conns)
    managers = []
    opened = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            manager = _manager(os.path.join(tmp, str(i)))
            await manager.start()
            managers.append(manager)
            await manager.dial("127.0.0.1", port)
            opened += 1
        await asyncio.sleep(hold)
        await asyncio.gather(*(m.stop() for m in managers))
    return opened


def memory_per_peer(kind: str, n: int = 200, hold: float = 3.0) -> float:
    ctx = mp.get_context("spawn")
    port_q, cmd_q = ctx.Queue(), ctx.Queue()
    hub = Child(ctx, _hub, kind, port_q, cmd_q)
    try:
        port = get(port_q, [hub], 30, "the hub's port")
        time.sleep(0.3)
        before = rss_kib(hub.pid)
        samples: list[int] = []

        async def run() -> None:
            task = asyncio.create_task(_open_clients(kind, port, n, hold))
            while not task.done():
                await asyncio.sleep(0.25)
                samples.append(rss_kib(hub.pid))
            await task

        asyncio.run(run())
        after = max(samples)
    finally:
        cmd_q.put("stop")
        hub.stop()
    return (after - before) / n


def main(argv: list[str]) -> None:
    rate, size = codec_rate(sized(argv, 2.0, 0.5, 0.1))
    print_table("Frame codec (encode + decode, one process)", ["message", "frame bytes", "frames/s"],
                [["order-sized map", size, rate]])

    total = sized(argv, 300_000, 100_000, 5_000)
    rounds = sized(argv, 3, 1, 1)
    kinds = ["bare", "link"]
    try:
        import uvloop  # noqa: F401  (optional: pip install exchange-node[fast])
        kinds.append("link-uvloop")
    except ImportError:
        print("  (uvloop not installed: its row is skipped; `pip install uvloop` to compare)")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            samples[kind].append(throughput(kind, total))
    rates = {k: statistics.median(v) for k, v in samples.items()}
    b, o = rates["bare"], rates["link"]
    labels = {"bare": "bare plaintext asyncio Protocol (baseline)",
              "link": "exchange-node PeerLink, Noise-encrypted",
              "link-uvloop": "exchange-node PeerLink, encrypted, on uvloop"}
    print_table(f"One-way messages between two processes on loopback ({total:,} msgs, median of {rounds})",
                ["path", "msgs/s", "MB/s", "ratio to bare"],
                [[labels[k], rates[k], rates[k] * size / 1e6, rates[k] / b] for k in kinds])
    print(f"  goal: encrypted link >= 0.5x bare -> {'MET' if o / b >= 0.5 else 'NOT MET'} ({o / b:.2f}x)")

    count = sized(argv, HANDSHAKES, 50, 5)
    times = handshake_times(count)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
    print_table("Handshake time: TCP connect to open link, sequential dials between two processes",
                ["link", "dials", "p50 ms", "p99 ms", "max ms"],
                [["encrypted (Noise XX + hellos)", count, pick(0.5), pick(0.99), times[-1] * 1000]])

    n = sized(argv, 200, 50, 5)
    hold = sized(argv, 3.0, 3.0, 0.5)
    bare_mem = memory_per_peer("bare", n, hold)
    link_mem = memory_per_peer("link", n, hold)
    print_table(f"Idle memory per connected peer (hub RSS growth / {n} links)", ["hub", "KiB per peer"],
                [["bare asyncio server", bare_mem], ["exchange-node PeerManager", link_mem]])
    print(f"  goal: <= 20 KiB per peer -> {'MET' if link_mem <= 20 else 'NOT MET'} ({link_mem:.1f} KiB)")
