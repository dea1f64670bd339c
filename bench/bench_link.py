"""Link benchmark: frame codec rate, one-way link throughput of the encrypted link against a bare
plaintext asyncio baseline and against the plaintext link of protocol 1 (the code at
`PLAINTEXT_COMMIT`, checked out of git into a temporary directory), handshake time, and idle
memory per connected peer.

Every throughput row uses two processes (sender, receiver), the same ~200-byte order message,
length-prefixed msgpack and the same batching on the sender (join frames written in one loop
pass); the baseline has no protocol logic: no handshake, encryption, schema checks, counters or
dispatch. Rows are interleaved in rounds so machine drift hits all alike; medians are reported.
Handshake time: one process dials another `HANDSHAKES` times in a row (TCP connect to open link:
Noise XX, hellos and acks for protocol 2; signed hellos for protocol 1).
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from bench.plaintext import PLAINTEXT_COMMIT, plaintext_tree, use_code as _use_code
from bench.table import print_table
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
    if hasattr(manager, "schemas"):
        manager.schemas.add({"bench_order": m.schema(fields)})
    else:                                  # a baseline checkout from before per-node schema registries
        m.register_schema("bench_order", fields)


def _run(main, use_uvloop: bool = False) -> Any:
    if use_uvloop:
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def _link_receiver(port_q: mp.Queue, result_q: mp.Queue, total: int, use_uvloop: bool = False,
                   code_dir: str | None = None) -> None:
    _use_code(code_dir)

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

            manager.message_handler = on_message
            await manager.start()
            port_q.put(manager.listen_port)
            result_q.put(await done)
            await asyncio.sleep(0.2)
            await manager.stop()

    _run(main(), use_uvloop)


def _link_sender(port: int, total: int, result_q: mp.Queue, use_uvloop: bool = False,
                 code_dir: str | None = None) -> None:
    _use_code(code_dir)

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
async def _await_result(result_q: mp.Queue) -> float:
    """The receiver's elapsed time; the sender stays connected until the receiver has it all."""
    return await asyncio.get_running_loop().run_in_executor(None, result_q.get, True, 120)


async def _bare_send(port: int, total: int, result_q: mp.Queue) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    while sent < total:
        n = min(BATCH, total - sent)
        writer.write(b"".join(encode_frame(ORDER) for _ in range(n)))
        sent += n
        await writer.drain()
    elapsed = await _await_result(result_q)
    writer.close()
    return elapsed


def throughput(kind: str, total: int, plaintext_dir: str | None = None) -> float:
    """kind: "bare", "link" (encrypted), "link-uvloop" (both processes on uvloop) or "plaintext"
    (protocol 1's link, from `plaintext_dir`)."""
    ctx = mp.get_context("spawn")
    port_q, result_q, done_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    uv = kind == "link-uvloop"
    code_dir = plaintext_dir if kind == "plaintext" else None
    if kind == "bare":
        proc = ctx.Process(target=_bare_receiver, args=(port_q, result_q, total), daemon=True)
    else:
        proc = ctx.Process(target=_link_receiver, args=(port_q, result_q, total, uv, code_dir), daemon=True)
    proc.start()
    sender = None
    try:
        port = port_q.get(timeout=30)
        if kind == "bare":
            elapsed = _run(_bare_send(port, total, result_q))
        else:
            sender = ctx.Process(target=_link_sender, args=(port, total, done_q, uv, code_dir), daemon=True)
            sender.start()
            elapsed = result_q.get(timeout=120)
            done_q.put(True)
    finally:
        for child in (sender, proc):
            if child is not None:
                child.join(10)
                if child.is_alive():
                    child.kill()
    return total / elapsed


# --- handshake time --------------------------------------------------------------------------
def _listener(port_q: mp.Queue, stop_q: mp.Queue, code_dir: str | None) -> None:
    _use_code(code_dir)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            manager = _manager(tmp, max_peers=1000)
            await manager.start()
            port_q.put(manager.listen_port)
            await asyncio.get_running_loop().run_in_executor(None, stop_q.get)
            await manager.stop()

    asyncio.run(main())


def _dialler(port: int, count: int, result_q: mp.Queue, code_dir: str | None) -> None:
    _use_code(code_dir)

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


def handshake_times(count: int, code_dir: str | None) -> list[float]:
    ctx = mp.get_context("spawn")
    port_q, stop_q, result_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    listener = ctx.Process(target=_listener, args=(port_q, stop_q, code_dir), daemon=True)
    listener.start()
    try:
        port = port_q.get(timeout=30)
        dialler = ctx.Process(target=_dialler, args=(port, count, result_q, code_dir), daemon=True)
        dialler.start()
        times = result_q.get(timeout=120)
        dialler.join(10)
    finally:
        stop_q.put("stop")
        listener.join(10)
        if listener.is_alive():
            listener.kill()
    return sorted(times)


# --- memory per peer -------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _hub(kind: str, port_q: mp.Queue, cmd_q: mp.Queue) -> None:
    async def main() -> None:
        if kind == "bare":
            class Sink(asyncio.Protocol):
                def data_received(self, data: bytes) -> None:
                    pass
            server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
            port_q.put(server.sockets[0].getsockname()[1])
        else:
            tmp = tempfile.mkdtemp()
            manager = _manager(tmp)
            await manager.start()
            port_q.put(manager.listen_port)
        await asyncio.get_running_loop().run_in_executor(None, cmd_q.get)

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
    proc = ctx.Process(target=_hub, args=(kind, port_q, cmd_q), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        samples: list[int] = []

        async def run() -> None:
            task = asyncio.create_task(_open_clients(kind, port, n, hold))
            while not task.done():
                await asyncio.sleep(0.25)
                samples.append(rss_kib(proc.pid))
            await task

        asyncio.run(run())
        after = max(samples)
    finally:
        cmd_q.put("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return (after - before) / n


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    rate, size = codec_rate(0.5 if quick else 2.0)
    print_table("Frame codec (encode + decode, one process)", ["message", "frame bytes", "frames/s"],
                [["order-sized map", size, rate]])

    total = 100_000 if quick else 300_000
    rounds = 1 if quick else 3
    plaintext_dir = plaintext_tree()
    kinds = ["bare", "link"] + (["plaintext"] if plaintext_dir else [])
    if plaintext_dir is None:
        print("  (git archive failed: the protocol 1 plaintext link row is skipped)")
    try:
        import uvloop  # noqa: F401  (optional: pip install exchange-node[fast])
        kinds.append("link-uvloop")
    except ImportError:
        print("  (uvloop not installed: its row is skipped; `pip install uvloop` to compare)")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            samples[kind].append(throughput(kind, total, plaintext_dir))
    rates = {k: statistics.median(v) for k, v in samples.items()}
    b, o = rates["bare"], rates["link"]
    labels = {"bare": "bare plaintext asyncio Protocol (baseline)",
              "link": "exchange-node PeerLink, Noise-encrypted (protocol 2)",
              "plaintext": f"exchange-node PeerLink, plaintext (protocol 1, {PLAINTEXT_COMMIT[:7]})",
              "link-uvloop": "exchange-node PeerLink, encrypted, on uvloop"}
    print_table(f"One-way messages between two processes on loopback ({total:,} msgs, median of {rounds})",
                ["path", "msgs/s", "MB/s", "ratio to bare", "ratio to plaintext link"],
                [[labels[k], rates[k], rates[k] * size / 1e6, rates[k] / b,
                  rates[k] / rates["plaintext"] if "plaintext" in rates else "-"] for k in kinds])
    print(f"  goal: encrypted link >= 0.5x bare -> {'MET' if o / b >= 0.5 else 'NOT MET'} ({o / b:.2f}x)")

    count = 50 if quick else HANDSHAKES
    rows = []
    for label, code_dir in (("encrypted (Noise XX + hellos, protocol 2)", None),
                            ("plaintext (signed hellos, protocol 1)", plaintext_dir)):
        if label.startswith("plaintext") and plaintext_dir is None:
            continue
        times = handshake_times(count, code_dir)
        pick = lambda q, times=times: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
        rows.append([label, count, pick(0.5), pick(0.99), times[-1] * 1000])
    print_table("Handshake time: TCP connect to open link, sequential dials between two processes",
                ["link", "dials", "p50 ms", "p99 ms", "max ms"], rows)

    n = 50 if quick else 200
    bare_mem = memory_per_peer("bare", n)
    link_mem = memory_per_peer("link", n)
    print_table(f"Idle memory per connected peer (hub RSS growth / {n} links)", ["hub", "KiB per peer"],
                [["bare asyncio server", bare_mem], ["exchange-node PeerManager", link_mem]])
    print(f"  goal: <= 20 KiB per peer -> {'MET' if link_mem <= 20 else 'NOT MET'} ({link_mem:.1f} KiB)")
