"""Fair under flood on the Grenache message path, with real exchange-node processes and real grapes:
one source floods node b's Grenache message endpoint from another loopback /24 (127.0.7.1) with valid-shaped
requests of 256 frames, or of one frame of a megabyte, as fast as it can on 16 connections, while node a, which
reaches b only over Grenache, sends it unicasts and broadcasts. a's messages all arrive, the flood gets 429
"ERR_BUSY" past its address's share (GRENACHE_MESSAGES_RATE units a second: a frame, or BODY_UNIT_BYTES of body,
whichever is more), b's /status, /metrics and console name it, and nobody else is refused or blamed.
"""
from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections import Counter

import aiohttp
import orjson
import pytest

from config import Settings
from p2p.framing import encode_body
from p2p.grenache.limits import BODY_UNIT_BYTES
from p2p.routing.grenache_path import MAX_FRAMES
from tests.harness import wait_until
from tests.stream_client import StreamClient
from tests.interop.test_grenache_messages import metric, received, walled_pair

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

ATTACKER = "127.0.7.1"
CONNECTIONS = 16
RATE = Settings().grenache_messages_rate       # the default: frames a second from one address


async def console_held_back(api_url: str) -> list[dict[str, str]]:
    """The console's "held back" rows, as its status channel sends them."""
    client = await StreamClient.connect(api_url)
    try:
        chan = await client.subscribe("status")
        await client.wait_for(lambda: bool(client.data.get(chan)))
        return list(client.data[chan][0]["status"]["held_back"])
    finally:
        await client.close()


def small_frames() -> list[str]:
    """A request's most frames, each a small note."""
    frame = base64.b64encode(encode_body({"type": "note", "id": "x" * 16, "origin": "0" * 40, "ts": time.time(),
                                          "hops": 0, "payload": "flood"})).decode()
    return [frame] * MAX_FRAMES


def one_large_frame() -> list[str]:
    """One frame of a megabyte (the default MAX_FRAME_BYTES): a unit were frames all that counted."""
    return [base64.b64encode(encode_body({"type": "note", "id": "y" * 16, "origin": "0" * 40, "ts": time.time(),
                                          "hops": 0, "payload": "z" * 1_000_000})).decode()]


class Flood:
    """Posts requests holding `frames` to `key` at 127.0.0.1:`port` from ATTACKER on CONNECTIONS connections until
    stopped, in a thread of its own (the test's nodes are other processes); counts the answers by (status, text)."""

    def __init__(self, port: int, key: str, frames: list[str]) -> None:
        self.body = orjson.dumps([str(uuid.uuid4()), key, {"v": 1, "frames": frames}])
        self.worth = max(len(frames), -(-len(self.body) // BODY_UNIT_BYTES))  # units a request is worth
        self.url = f"http://127.0.0.1:{port}/"
        self.answers: Counter[tuple[int, str]] = Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="flood", daemon=True)
        self.started = self.stopped = 0.0

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(ATTACKER, 0), limit=CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(self._one(session) for _ in range(CONNECTIONS)))

    async def _one(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            try:
                async with session.post(self.url, data=self.body, headers={"grc-compress": "none"}) as response:
                    text = (await response.read()).decode()[:40]
                self.answers[(response.status, text if response.status != 200 else "")] += 1
            except (aiohttp.ClientError, OSError):
                self.errors += 1

    def __enter__(self) -> "Flood":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.stopped = time.monotonic()


@pytest.mark.parametrize("frames", [small_frames, one_large_frame], ids=["frames", "bytes"])
def test_a_flood_from_one_address_is_refused_busy_and_an_honest_node_still_gets_through(cluster, grapes,
                                                                                       frames) -> None:
    a, b = walled_pair(cluster, grapes)
    path = b.status()["router"]["grenache"]
    failed_before = a.status()["router"]["grenache"]["counters"]["requests_failed"]

    with Flood(path["port"], path["names"][0], frames()) as flood:
        wait_until(lambda: flood.answers[(429, "ERR_BUSY")] >= 50, 10, message="the flood is being refused")
        started = time.monotonic()
        sent = []
        for burst in range(4):                                         # over two seconds of flood
            sent += [a.api("POST", "/debug/send", {"node_id": b.node_id, "payload": {"n": 25 * burst + i}})[1]
                     for i in range(25)]
            time.sleep(0.5)
        ids = set(a.api("POST", "/debug/broadcast", {"payload": "to everyone", "count": 10})[1]["ids"])
        wait_until(lambda: {s["id"] for s in sent} | ids <= set(received(b)), 20, message="b got all 110")
        delivered = time.monotonic() - started
        time.sleep(1.0)                                                # and the flood goes on a moment longer
    seconds = flood.stopped - flood.started
    admitted, busy = flood.answers[(200, "")], flood.answers[(429, "ERR_BUSY")]
    print(f"flood for {seconds:.1f} s: {admitted} requests of {len(flood.body):,} bytes ({flood.worth} units) read, "
          f"{busy} refused busy, {flood.errors} transport errors; a's 110 messages all at b {delivered:.2f} s after "
          f"the first was sent")

    assert {s["outcome"] for s in sent} == {"grenache"}
    assert all(received(b)[i][4] == 1 for i in ids)                     # each broadcast handled once
    # the attacker's address had its share, and then (a little more: a request's worth is charged on credit, up to
    # one request per connection in flight when its share ran out) no more
    assert busy > 0 and set(flood.answers) <= {(200, ""), (429, "ERR_BUSY")}
    assert admitted * flood.worth <= 2 * RATE + RATE * seconds + CONNECTIONS * flood.worth
    limits = b.status()["router"]["grenache"]["limits"]
    assert limits["refused"]["per_address"] >= busy and limits["refused"]["total"] == 0
    refused_by = {row["source"]: row["reasons"] for row in limits["refused_by"]["addresses"]}
    assert set(refused_by) == {ATTACKER}, refused_by                  # a (127.0.0.1) was never refused
    assert refused_by[ATTACKER]["grenache_msg_rate_per_address"] >= busy
    assert metric(b, "exchange_node_grenache_path_refused_total", reason="rate_per_address") >= busy
    held_back = asyncio.run(console_held_back(b.api_url))
    assert [row["what"] for row in held_back if row["peer"] == ATTACKER] == ["Grenache message client"], held_back
    assert a.status()["router"]["grenache"]["counters"]["requests_failed"] == failed_before
    assert all(peer["penalty"] == 0 for peer in b.peers() + a.peers())
    assert a.proc is not None and b.proc is not None and a.proc.poll() is None and b.proc.poll() is None
