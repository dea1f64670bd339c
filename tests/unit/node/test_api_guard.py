"""The API's connection guard, in process over real sockets: caps per address, per network and in
all; every request of a keep-alive connection has its own header deadline, counted from its first byte; a
body trickled after complete headers is cut at its own deadline; an idle keep-alive connection is closed; an
answer its client does not read at the least rate is dropped past the write deadline; and
who was cut is recorded by source."""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

import pytest
from aiohttp import web

import p2p.public.guard as guard_module
from p2p.public.guard import ConnectionGuard, GuardedSite, install_guard
from p2p.public.refusals import RefusalLog

DEADLINE = 0.6


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


GATE = web.AppKey("gate", asyncio.Event)
ARRIVED: web.AppKey[asyncio.Queue[None]] = web.AppKey("arrived")


async def wait_for_gate(request: web.Request) -> web.Response:
    request.app[ARRIVED].put_nowait(None)
    await request.app[GATE].wait()
    return web.Response(text="through")


@pytest.fixture
async def served_app() -> AsyncIterator[tuple[int, ConnectionGuard, web.Application]]:
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/wait", wait_for_gate)
    app[GATE] = asyncio.Event()
    app[ARRIVED] = asyncio.Queue()
    install_guard(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=3 * DEADLINE)
    await runner.setup()
    guard = ConnectionGuard(per_address=8, per_subnet=8, total=8, header_timeout=DEADLINE, body_timeout=DEADLINE,
                            refusals=RefusalLog())
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1], guard, app
    app[GATE].set()
    await runner.cleanup()


@pytest.fixture
async def served(served_app) -> tuple[int, ConnectionGuard]:
    port, guard, _ = served_app
    return port, guard


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> bytes:
    """Send one whole request and read its whole answer (Content-Length framed)."""
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.05) -> None:
    """Feed `data` a byte at a time, then keep feeding spaces, until the connection is closed."""
    for byte in data + b" " * 10_000:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


async def _answer_and_close(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """What the node answers until it closes the connection, and when it closed it."""
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        data = b""
    return data, time.monotonic()


async def test_every_request_of_a_keep_alive_connection_has_its_own_header_deadline_from_its_first_byte(served):
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    await asyncio.sleep(1.5 * DEADLINE)         # idle between requests is the keep-alive timeout's, not this
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    started = time.monotonic()
    trickle = asyncio.create_task(_trickle(writer, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: "))
    answer, closed = await _answer_and_close(reader)
    trickle.cancel()
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer
    assert DEADLINE * 0.9 <= closed - started <= DEADLINE + 2.0, closed - started
    assert guard.counters["header_timeouts"] == 1
    writer.close()                              # the client closes its side: the node lets go of the socket
    await asyncio.wait_for(_until(lambda: guard.open.held == 0), guard_module.LINGER / 2)


async def test_a_cut_client_that_keeps_its_side_open_is_dropped_after_the_linger(served, monkeypatch):
    monkeypatch.setattr(guard_module, "LINGER", 0.5)
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
    answer, cut = await _answer_and_close(reader)          # the 408, then the end of what the node sends
    assert answer.startswith(b"HTTP/1.1 408") and guard.open.held == 1, "read nothing more, but not gone yet"
    writer.write(b"more header bytes, unread")
    await asyncio.wait_for(_until(lambda: guard.open.held == 0), 5)
    assert time.monotonic() - cut >= 0.4
    writer.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_a_connection_that_never_finishes_its_first_headers_is_cut(served):
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /hello HTTP/1.1\r\n")
    answer, closed = await _answer_and_close(reader)
    assert answer.startswith(b"HTTP/1.1 408") and DEADLINE * 0.9 <= closed - started <= DEADLINE + 2.0
    assert guard.counters["header_timeouts"] == 1
    writer.close()


async def test_a_connection_that_asks_nothing_is_closed_as_idle_and_held_against_nobody(served):
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer, closed = await _answer_and_close(reader)         # sends nothing at all, as a browser's preconnect
    assert answer == b"" and DEADLINE * 0.9 <= closed - started <= DEADLINE + 2.0
    assert guard.counters["idle_timeouts"] == 1 and guard.counters["header_timeouts"] == 0
    assert guard.refusals is not None and guard.refusals.view()["addresses"] == []
    writer.close()


async def test_a_body_trickled_after_complete_headers_is_cut_at_the_body_deadline(served):
    """The handler waits for the body: 408, then the connection closes (one that answers without reading the body
    closes the connection with its answer: the next test)."""
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
    started = time.monotonic()
    trickle = asyncio.create_task(_trickle(writer, b"x"))
    answer, closed = await _answer_and_close(reader)
    trickle.cancel()
    assert answer.startswith(b"HTTP/1.1 408") and answer.count(b"HTTP/1.1") == 1, answer
    assert b"request body did not arrive" in answer
    assert DEADLINE * 0.9 <= closed - started <= DEADLINE + 2.0, closed - started
    assert guard.counters == {**guard.counters, "body_timeouts": 1, "header_timeouts": 0}
    writer.close()


async def test_bodies_and_requests_that_arrive_in_time_keep_the_connection(served):
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for n in range(3):
        body = b"%d" % n * 1000
        answer = await _request(reader, writer, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(body), body))
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(body)
        await asyncio.sleep(DEADLINE / 2)
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert (await _request(reader, writer, chunked)).endswith(b"hello")
    await asyncio.sleep(1.5 * DEADLINE)
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    assert guard.counters["header_timeouts"] == guard.counters["body_timeouts"] == 0
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(served):
    port, guard = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    idle_from = time.monotonic()
    answer, closed = await _answer_and_close(reader)
    assert answer == b"" and 3 * DEADLINE * 0.9 <= closed - idle_from <= 3 * DEADLINE + 2.0
    assert guard.counters["header_timeouts"] == 0
    writer.close()


async def test_connections_over_a_cap_are_refused_at_accept_and_recorded_by_source(served):
    port, guard = served
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b"", "the ninth is closed unanswered"
    # every cap is 8 here: its own address's share refuses it (asked first: no room is made for a source its own
    # caps refuse)
    assert guard.counters["refused_per_address"] == 1 and guard.counters["refused_total"] == 0
    assert guard.refusals is not None
    view = guard.refusals.view()
    assert view["addresses"][0]["source"] == "127.0.0.1"
    assert view["addresses"][0]["reasons"] == {"api_connections_per_address": 1}
    assert view["subnets"][0]["source"] == "127.0.0.0/24"
    for _, w in held + [(reader, writer)]:
        w.close()


async def test_a_newcomer_network_gets_the_slot_the_crowded_network_left_quiet_longest(served):
    """Every slot held by idle keep-alive connections of one network, each inside its caps (FINDING 9): a client
    of another network is served, and the connection quiet longest gives up its slot."""
    port, guard = served
    held = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
        held.append((reader, writer))
    for source in ("127.0.1.1", "127.0.1.2"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
        held.append((reader, writer))
    for oldest in held[:2]:
        assert (await _answer_and_close(oldest[0]))[0] == b"", "the two quiet longest were closed"
    reader, writer = held[2]
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    assert guard.counters["evicted"] == 2 and guard.counters["refused_total"] == 0
    assert guard.view()["open"] == 8
    assert guard.refusals is not None
    assert guard.refusals.view()["addresses"][0]["reasons"] == {"api_connection_evicted": 2}
    for _, w in held:
        w.close()


async def test_no_connection_gives_up_its_slot_while_its_request_is_handled(served_app):
    port, guard, app = served_app
    held = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        held.append((reader, writer))
    for _ in held:
        await app[ARRIVED].get()            # every request reached its handler
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.1.1", 0))
    assert (await _answer_and_close(reader))[0] == b"", "refused: nobody is quiet"
    assert guard.counters["evicted"] == 0 and guard.counters["refused_total"] == 1
    app[GATE].set()
    for r, w in held:
        assert (await _request(r, w, b"")).endswith(b"through"), "and every request held is answered"
        w.close()
    writer.close()


async def test_bodies_that_stopped_arriving_give_up_their_slots_to_a_newcomer(served_app):
    """The red team's FINDING 12: every slot held by requests whose body never comes (headers and one byte of a
    100-byte body, under their body deadline). A client of another network is served all the same: the stalled
    body quiet longest gives up its slot."""
    port, guard, app = served_app
    guard.body_timeout = 30.0                   # the stalled bodies outlast the test
    held = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
        held.append((reader, writer))
    reader, writer = held[-1]
    await writer.drain()
    for _ in range(3):                                  # every request reached the guard (its headers are in)
        await asyncio.sleep(0)
    newcomers = []
    for source in ("127.0.1.1", "127.0.1.2", "127.0.1.3"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
        newcomers.append((reader, writer))
    assert guard.counters["evicted"] == 3 and guard.counters["refused_total"] == 0
    for stalled_reader, _ in held[:3]:
        assert (await _answer_and_close(stalled_reader))[0] == b"", "the three quiet longest were reset"
    for _, w in held + newcomers:
        w.close()


async def test_a_request_answered_without_reading_its_body_gives_up_its_slot_while_the_rest_is_awaited(served):
    """A handler that answers without reading the body (as a refusal before the body does): aiohttp waits for the
    rest of the body to drop it, and meanwhile the connection is as evictable as an idle one."""
    port, guard = served
    held = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
        answer = await asyncio.wait_for(reader.readuntil(b"hello"), 5)
        assert answer.startswith(b"HTTP/1.1 200")
        held.append((reader, writer))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.1.1", 0))
    assert (await _request(reader, writer, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(b"hello")
    assert guard.counters["evicted"] == 1 and guard.counters["body_timeouts"] == 0
    for _, w in held + [(reader, writer)]:
        w.close()


def test_a_network_gives_up_a_slot_only_to_one_that_would_hold_fewer():
    class Quiet:
        def __init__(self, address: str) -> None:
            self.address: str | None = address
            self.quiet_since: float | None = 0.0
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True
            assert self.address is not None
            guard.release(self.address, self)
            self.address = None

    guard = ConnectionGuard(per_address=8, per_subnet=8, total=6)
    first = [Quiet("203.0.113.1") for _ in range(4)] + [Quiet("198.51.100.1") for _ in range(2)]
    assert all(guard.admit(c.address or "", c) for c in first)
    newcomer = Quiet("198.51.100.2")
    assert guard.admit("198.51.100.2", newcomer), "2 + 1 < 4: the crowded /24 gives up one"
    assert [c.evicted for c in first] == [True] + [False] * 5
    assert not guard.admit("198.51.100.3", Quiet("198.51.100.3")), "3 + 1 would not hold fewer than 3"
    assert guard.admit("192.0.2.1", Quiet("192.0.2.1")), "a third network holding none is let in"
    assert guard.counters["evicted"] == 2 and guard.counters["refused_total"] == 1


def test_an_address_the_front_shuts_is_refused_at_accept_and_recorded():
    guard = ConnectionGuard(4, 8, 16, shut=lambda address: address == "10.0.0.1")
    assert not guard.admit("10.0.0.1") and guard.admit("10.0.0.2")
    assert guard.counters["refused_shut"] == 1 and guard.open.held == 1


def test_the_caps_are_per_address_per_network_and_in_all():
    guard = ConnectionGuard(per_address=2, per_subnet=3, total=4, refusals=RefusalLog())
    assert guard.admit("203.0.113.1") and guard.admit("203.0.113.1") and not guard.admit("203.0.113.1")
    assert guard.admit("203.0.113.2") and not guard.admit("203.0.113.3"), "the /24's share is 3"
    assert guard.admit("198.51.100.1") and not guard.admit("192.0.2.1"), "and 4 in all"
    assert {k: v for k, v in guard.counters.items() if v} == {"refused_per_address": 1, "refused_per_subnet": 1,
                                                                "refused_total": 1}
    guard.release("203.0.113.1")
    assert guard.admit("192.0.2.1") and guard.view()["open"] == 4
    assert guard.refusals is not None
    reasons = {row["source"]: row["reasons"] for row in guard.refusals.view()["subnets"]}
    assert reasons == {"203.0.113.0/24": {"api_connections_per_address": 1, "api_connections_per_subnet": 1},
                       "192.0.2.0/24": {"api_connections_total": 1}}


BIG = 8 * 1024 * 1024


async def big_answer(_request: web.Request) -> web.Response:
    return web.Response(body=b"x" * BIG)


MIN_RATE = 1024 * 1024      # the test guard's least rate: bytes a second a slow reader must drain
SLOW_PACE = 3 * MIN_RATE    # what the slow reader aims at (a loaded machine may make it slower, not faster)


async def read_at_pace(reader: asyncio.StreamReader, guard: ConnectionGuard, parked: list[int],
                       pace: float = SLOW_PACE) -> int:
    """Read the whole answer at no more than `pace` bytes a second; note what the guard holds as parked."""
    received, started = 0, time.monotonic()
    while received < BIG:
        chunk = await asyncio.wait_for(reader.read(64 * 1024), 5)
        if not chunk:
            break
        received += len(chunk)
        parked.append(guard.slow_answers.held)
        ahead = received / pace - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    return received


@pytest.mark.parametrize("reads", ["nothing", "a trickle", "slowly", "slowly, over its budget", "slowly, big buffers",
                                   "steadily", "slowly, then evicted"])
async def test_an_answer_nobody_reads_is_dropped_with_its_connection_at_the_write_deadline(reads: str):
    """A client asking for a big answer and reading none of it (its receive window shut) holds the answer in the
    node's memory: past `write_timeout` of a full send buffer the connection is aborted. So is one that reads a
    trickle (a few KB now and then, below the least rate). A client that reads slowly, over the least rate, gets
    another deadline each time and the whole answer, within its slow-answer budget; past that budget it is cut
    too. A client that reads steadily gets the whole answer, however long it takes past the deadline in all."""
    import socket

    app = web.Application()
    app.router.add_get("/big", big_answer)
    install_guard(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    refusals = RefusalLog()
    guard = ConnectionGuard(per_address=8, per_subnet=8, total=8, header_timeout=5, body_timeout=5,
                            write_timeout=DEADLINE / 2 if reads == "slowly, big buffers" else DEADLINE,
                            refusals=refusals, write_min_rate=MIN_RATE,
                            slow_answer_bytes=BIG // 8 if reads == "slowly, over its budget" else BIG)
    cut = asyncio.Event()
    refused = guard.refused

    def refused_and_told(address: str, counter: str, reason: str) -> None:
        refused(address, counter, reason)
        cut.set()
    guard.refused = refused_and_told        # type: ignore[method-assign]
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    sock = socket.socket()
    if reads != "slowly, big buffers":      # else the kernel's: the node's transport stalls while the kernel holds MBs
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        if reads == "steadily":
            received = 0
            started = time.monotonic()
            while received < BIG:
                chunk = await asyncio.wait_for(reader.read(256 * 1024), 5)
                assert chunk, "the reading client's connection was cut"
                received += len(chunk)
                if time.monotonic() - started < 3 * DEADLINE:
                    await asyncio.sleep(0.01)       # a slow reader, but a reader: the buffer drains now and then
            assert guard.counters["write_timeouts"] == 0
        elif reads == "slowly, then evicted":
            received, started = 0, time.monotonic()
            while not guard._parked and received < BIG:         # until its first grant
                received += len(await asyncio.wait_for(reader.read(64 * 1024), 5))
                await asyncio.sleep(max(0.0, received / SLOW_PACE - (time.monotonic() - started)))
            ((slow_reader, parked_bytes),) = [item for readers in guard._parked.values() for item in readers.items()]
            assert parked_bytes > 0 and guard.slow_answers.held == parked_bytes
            slow_reader.evict_slow()            # as the guard does to make room for another network's
            assert guard.slow_answers.held == 0 and not guard._parked, "its grant given back at once"
            rest = await asyncio.wait_for(reader.read(), 5)
            assert received + len(rest) < BIG, "the answer was dropped with the connection"
            await _until(lambda: guard.open.held == 0)
            (reasons,) = [row["reasons"] for row in refusals.view()["addresses"]]
            assert list(reasons) == ["api_slow_answer_evicted"]
        elif reads in ("slowly", "slowly, big buffers"):
            parked: list[int] = []
            started = time.monotonic()
            pace = 4 * MIN_RATE if reads == "slowly, big buffers" else SLOW_PACE
            assert await read_at_pace(reader, guard, parked, pace) >= BIG, "the slow reader's connection was cut"
            assert time.monotonic() - started > 2 * DEADLINE, "the answer outlasted several write deadlines"
            assert max(parked) > 0, "it was given another deadline from its budget"
            assert guard.counters["write_timeouts"] == guard.counters["slow_answers_over_budget"] == 0
            assert guard.slow_answers.held == 0, "its grant was given back once its answer was sent"
        else:
            if reads == "a trickle":
                trickled, started = 0, time.monotonic()
                while not cut.is_set() and time.monotonic() - started < 10 * DEADLINE:   # 4 KB a third of it
                    trickled += len(await asyncio.wait_for(reader.read(4096), 10 * DEADLINE))
                    try:
                        await asyncio.wait_for(asyncio.shield(cut.wait()), DEADLINE / 3)
                    except asyncio.TimeoutError:
                        pass
                assert 0 < trickled < BIG
            elif reads == "slowly, over its budget":
                assert await read_at_pace(reader, guard, []) < BIG
            await asyncio.wait_for(cut.wait(), 10 * DEADLINE)
            over_budget = reads == "slowly, over its budget"
            assert guard.counters["write_timeouts"] == (0 if over_budget else 1), guard.counters
            assert guard.counters["slow_answers_over_budget"] == (1 if over_budget else 0), guard.counters
            assert guard.open.held == 0, "its slot was freed"
            assert guard.slow_answers.held == 0
            (reasons,) = [row["reasons"] for row in refusals.view()["addresses"]]
            assert list(reasons) == (["api_slow_answers_per_address"] if over_budget else ["api_write_timeout"])
    finally:
        writer.close()
        await runner.cleanup()


class FakeSlowReader:
    """A parked slow reader as the guard sees one: evicted, it gives its grant back as a connection does."""

    def __init__(self, guard: ConnectionGuard, address: str) -> None:
        self.guard, self.address, self.parked, self.evicted = guard, address, 0, False

    def keep(self, unsent: int) -> str | None:
        reason = self.guard.keep_slow_reader(self.address, 10**6, unsent, self.parked, self)
        self.parked = unsent if reason is None else 0
        return reason

    def evict_slow(self) -> None:
        self.evicted = True
        self.guard.unpark(self.address, self.parked, self)
        self.parked = 0


def test_slow_readers_of_a_few_networks_cannot_take_every_other_networks_slow_answers():
    """Red team: the slow-answer total was first come, first served: four /24s of slow readers, each within its
    address's and network's shares, held all of it and every other network's slow reader was cut. The network
    parking the most now gives up its largest slow answer to a network parking less, never to one of its own."""
    guard = ConnectionGuard(write_timeout=1.0, write_min_rate=1, slow_answer_bytes=1000)    # 4,000 a /24, 16,000
    crowd = [FakeSlowReader(guard, f"10.0.{net}.{host}") for net in range(4) for host in range(1, 5)]
    assert [reader.keep(1000) for reader in crowd] == [None] * 16 and guard.slow_answers.held == 16_000
    honest = FakeSlowReader(guard, "192.0.2.7")
    assert honest.keep(600) is None, "a network parking nothing gets room"
    assert sum(reader.evicted for reader in crowd) == 1 and guard.counters["slow_answers_evicted"] == 1
    assert guard.slow_answers.held == 15_600
    neighbour = FakeSlowReader(guard, "192.0.2.8")
    assert neighbour.keep(1000) is None, "its network still parks less than the crowd's: another gives up one"
    assert sum(reader.evicted for reader in crowd) == 2
    late = FakeSlowReader(guard, "10.0.0.9")
    assert late.keep(1000) == "slow_answers_total", "a network as heavy as the heaviest makes no room from them"
    assert sum(reader.evicted for reader in crowd) == 2
    second = [FakeSlowReader(guard, f"198.51.100.{host}") for host in range(1, 5)]
    verdicts = [reader.keep(1000) for reader in second]
    assert verdicts == [None, None, "slow_answers_total", "slow_answers_total"], \
        "a newcomer network gets room until it would park as much as the heaviest"
    assert max(guard.slow_answers.by_subnet.values()) == 3000 and guard.slow_answers.held <= 16_000
    assert guard.counters["slow_answers_evicted"] == 4 and sum(reader.evicted for reader in crowd) == 4
    for reader in [*crowd, honest, neighbour, late, *second]:
        if reader.parked:
            guard.unpark(reader.address, reader.parked, reader)
    assert guard.slow_answers.held == 0 and not guard._parked, "everything given back, nothing left behind"


def test_no_slow_answer_gives_up_its_room_to_a_source_its_own_caps_refuse():
    """Red team: the total was asked first and room made, then the newcomer's address cap refused it anyway: an
    address at its share cut an honest slow reader at each of its connections' deadlines, for nothing."""
    guard = ConnectionGuard(write_timeout=1.0, write_min_rate=1, slow_answer_bytes=1000)
    honest = [FakeSlowReader(guard, f"10.0.{net}.{host}") for net in range(3) for host in range(1, 5)]
    attacker = FakeSlowReader(guard, "203.0.113.9")
    assert [reader.keep(1000) for reader in [*honest, attacker]] == [None] * 13
    assert [FakeSlowReader(guard, f"198.51.100.{host}").keep(1000) for host in (1, 2, 3)] == [None] * 3
    assert guard.slow_answers.held == guard.slow_answers.total
    assert [FakeSlowReader(guard, "203.0.113.9").keep(900) for _ in range(10)] == ["slow_answers_per_address"] * 10
    assert not any(reader.evicted for reader in honest) and guard.counters["slow_answers_evicted"] == 0
    assert FakeSlowReader(guard, "203.0.113.10").keep(0) is None, "a grant of nothing fits ..."
    assert sum(map(len, guard._parked.values())) == 16, "... holds nothing and is not kept"


def test_a_slow_reader_is_kept_only_over_the_least_rate_and_within_its_sources_budgets():
    """The rule the write deadline asks (`ConnectionGuard.keep_slow_reader`): another deadline for a reader that
    drained at least the least rate, while its address (its /24 four times, everyone sixteen times) keeps no more
    than its budget parked in unsent answers; a grant is given back whatever the answer."""
    guard = ConnectionGuard(write_timeout=2.0, write_min_rate=100, slow_answer_bytes=1000)
    keep = guard.keep_slow_reader
    assert keep("10.0.0.1", 199, 10, 0) == "write_timeout", "below 100 bytes a second over the 2 s"
    assert ConnectionGuard(write_min_rate=0).keep_slow_reader("10.0.0.1", 10**9, 1, 0) == "write_timeout", "0: none"
    assert keep("10.0.0.1", 200, 1000, 0) is None and guard.slow_answers.held == 1000
    assert keep("10.0.0.1", 200, 1, 0) == "slow_answers_per_address", "a second slow answer of the same address"
    assert keep("10.0.0.1", 200, 900, 1000) is None and guard.slow_answers.held == 900, "its own grant renewed"
    for host in (2, 3, 4):
        assert keep(f"10.0.0.{host}", 500, 1000, 0) is None
    assert keep("10.0.0.5", 500, 200, 0) == "slow_answers_per_subnet", "the /24 holds 3,900 of its 4,000"
    for net in range(1, 13):
        assert keep(f"10.0.{net}.1", 500, 1000, 0) is None
    assert guard.slow_answers.held == 15_900
    assert keep("192.0.2.1", 500, 200, 0) == "slow_answers_total", "16,000 in all"
    assert keep("10.0.0.1", 0, 900, 900) == "write_timeout" and guard.slow_answers.held == 15_000, "given back"
    assert keep("192.0.2.1", 500, 1000, 0) is None
