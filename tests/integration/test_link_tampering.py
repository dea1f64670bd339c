"""A man in the middle between two real nodes: a TCP proxy that, once the link is up, flips a byte,
injects bytes or replays an earlier chunk. The receiving node closes the link as `decrypt_failed`,
blames neither node (the path is at fault), applies nothing tampered, and the nodes link again
through the same proxy."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.harness import free_ports, wait_until

NOTE_SETTINGS = {"discovery_pex": "false", "debug_api": "true", "heartbeat_interval": 0.2}


class TamperingProxy:
    """Forwards TCP between a listening port and `upstream`; `arm(mode)` tampers with the next chunk
    flowing upstream -> downstream (A's bytes towards B)."""

    def __init__(self, listen_port: int, upstream: tuple[str, int]) -> None:
        self.listen_port = listen_port
        self.upstream = upstream
        self.mode: str | None = None
        self.tampered = threading.Event()
        self.history: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    def arm(self, mode: str) -> None:
        self.tampered.clear()
        self.history.clear()
        self.mode = mode

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None             # a connection handler runs as a task
        self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        await asyncio.gather(self._pump(reader, up_writer, False), self._pump(up_reader, writer, True),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool) -> None:
        try:
            while data := await reader.read(65536):
                if downstream and self.mode is not None:
                    data = self._tamper(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _tamper(self, data: bytes) -> bytes:
        self.history.append(data)
        mode = self.mode
        if mode == "flip":
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        elif mode == "inject":
            data = data + b"\x00\x30" + bytes(48)
        elif mode == "replay":
            if len(self.history) < 2:
                return data  # let one chunk through, then send it again
            data = self.history[0] + data
        else:
            return data
        self.mode = None
        self.tampered.set()
        return data

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def proxied_pair(cluster):
    a = cluster.node("a", target_outbound=0, **NOTE_SETTINGS)  # only B dials, always through the proxy
    (proxy_port,) = free_ports(1)
    proxy = TamperingProxy(proxy_port, ("127.0.0.1", a.p2p_port))
    proxy.start()
    b = cluster.node("b", bootstrap_peers=f"127.0.0.1:{proxy_port}", **NOTE_SETTINGS)
    try:
        wait_until(lambda: a.node_id in b.connected_ids(), 10, message="B links to A through the proxy")
        yield a, b, proxy
    finally:
        proxy.stop()


def received_payloads(node) -> list:
    return [row for row in node.get("/debug/received?type=note")["received"]]


def test_flipped_injected_and_replayed_bytes_close_the_link_and_nothing_tampered_is_applied(proxied_pair):
    a, b, proxy = proxied_pair
    sent: dict[str, str] = {}
    for mode in ("flip", "inject", "replay"):
        closes_before = b.status()["p2p"]["close_reasons"].get("decrypt_failed", 0)
        proxy.arm(mode)
        for i in range(20):  # traffic for the proxy to tamper with (and heartbeats every 0.2 s)
            payload = f"{mode}-{i}"
            status, body = a.api("POST", "/debug/broadcast", {"type": "note", "payload": payload})
            assert status == 200
            sent[body["ids"][0]] = payload
            if proxy.tampered.is_set():
                break
            time.sleep(0.02)
        assert proxy.tampered.wait(5), f"{mode}: nothing went through the proxy"
        wait_until(lambda: b.status()["p2p"]["close_reasons"].get("decrypt_failed", 0) > closes_before, 5,
                   message=f"{mode}: B closes the link as decrypt_failed")
        wait_until(lambda: a.node_id in b.connected_ids(), 10, message=f"{mode}: B links to A again")
    # every note B handled is byte-for-byte one A sent; none arrived altered
    for row in received_payloads(b):
        assert row[1] == a.node_id and sent.get(row[0]) is not None
    seen_payloads = {sent[row[0]] for row in received_payloads(b)}
    assert seen_payloads <= set(sent.values())
    # the path was at fault: neither node blames the other
    for node, other in ((a, b), (b, a)):
        peer = next(p for p in node.peers() if p["node_id"] == other.node_id)
        assert peer["penalty"] == 0 and peer["status"] == "connected"
    assert b.status()["p2p"]["violations"] == {}
    for node in (a, b):
        assert "Traceback" not in node.log_path.read_text()
