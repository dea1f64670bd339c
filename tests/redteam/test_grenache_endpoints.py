"""Attacks on the Grenache HTTP endpoints of real exchange-node processes (real grapes, DISCOVERY_GRENACHE): the
message endpoint of a node b that an honest node a reaches only over Grenache (`walled_pair`), and the RPC endpoint
(GRENACHE_RPC_PORT). Attackers post from other loopback /24s (127.0.N.x). Each test asserts the defence: the honest
node's unicasts still arrive in time, the node's CPU stays bounded, slow or lying clients are cut, no traceback."""
from __future__ import annotations

import asyncio
import gzip
import threading
import time
from typing import Any

import orjson
import pytest

from p2p.routing.grenache_path import MAX_FRAMES
from tests.harness import free_ports, wait_until
from tests.interop.grenache_harness import grapes, require_node  # noqa: F401 - fixtures
from tests.interop.test_grenache_messages import grenache_members, hybrid, walled_pair
from tests.redteam.grenache_attack import (Background, Usage, connect, honest_under_attack, grenache_body, note_frames, p99, post,
                                           post_head, read_response)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

WALLED = {"p2p_host": "127.0.0.2", "grenache_messages_host": "127.0.0.1"}
LATENCY_BOUND = 1.0        # s: an honest unicast over Grenache arrives within this during an attack (idle: ~50 ms)


def no_traceback(*nodes) -> None:
    for node in nodes:
        text = node.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Fatal error" not in text, node.log_tail(60)
        assert node.proc is not None and node.proc.poll() is None, node.log_tail(40)


# --- (a) + (b): credit bursts from fresh addresses drain everyone's total -------------------------------------------
CREDIT_CONNECTIONS = 64          # per address: GRENACHE_MAX_CONNECTIONS_PER_ADDRESS
CREDIT_ADDRESSES = 4             # per /24: 4 x 64 = GRENACHE_MAX_CONNECTIONS_PER_SUBNET


def credit_burst(port: int, key: str, counts: dict[str, int]):
    """Every 2 s a fresh /24 (127.0.<30+k>.1-4): 256 connections send complete headers of a 256-frame request, as
    many admitted as their address has units for, then send the bodies."""
    body = grenache_body(key, {"v": 1, "frames": note_frames(MAX_FRAMES)})
    head = post_head(len(body))

    async def one(source: str, go: asyncio.Event) -> None:
        try:
            reader, writer = await connect(port, source)
        except OSError:
            counts["refused_connect"] = counts.get("refused_connect", 0) + 1
            return
        try:
            writer.write(head)
            await writer.drain()
            await go.wait()
            writer.write(body)
            status, text = await asyncio.wait_for(read_response(reader), 20)
            name = f"{status} {text[:12].decode(errors='replace')}" if status != 200 else "200"
            counts[name] = counts.get(name, 0) + 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
        finally:
            writer.close()

    async def attack(stop: threading.Event) -> None:
        k = 0
        while not stop.is_set():
            go = asyncio.Event()
            sources = [f"127.0.{30 + k}.{i + 1}" for i in range(CREDIT_ADDRESSES)]
            tasks = [asyncio.create_task(one(s, go)) for s in sources for _ in range(CREDIT_CONNECTIONS)]
            await asyncio.sleep(0.3)                     # every header in and admitted
            go.set()
            await asyncio.gather(*tasks)
            counts["bursts"] = counts.get("bursts", 0) + 1
            k += 1
            await asyncio.sleep(max(0.0, 2.0 - 0.3))
    return attack


@pytest.mark.soak          # ~40 s, in `make soak`; the mend is unit-tested in tests/unit/p2p/test_grenache_limits.py
def test_credit_bursts_from_fresh_subnets_do_not_starve_an_honest_grenache_peer(cluster, grapes) -> None:
    a, b = walled_pair(cluster, grapes)
    path = b.status()["router"]["grenache"]
    counts: dict[str, int] = {}
    window = honest_under_attack(a, b, credit_burst(path["port"], path["names"][1], counts))
    read, limits = counts.get("200", 0), window.limits
    print(f"\ncredit bursts: {counts}; {read * MAX_FRAMES} frames read in {window.ended - window.started:.1f} s "
          f"(the total allows {8000 * (window.ended - window.started) + 16000:.0f}); b {window.usage}; refused "
          f"{limits['refused']}; {window.honest()}")
    assert window.error is None, window.error
    no_traceback(a, b)
    refused_sources = {row["source"] for row in limits["refused_by"]["addresses"]}
    assert window.failed == 0 and "127.0.0.1" not in refused_sources, (window.failed, limits["refused_by"])  # never refused
    assert window.lost == 0 and p99(window.during) <= LATENCY_BOUND, (p99(window.during), window.lost)


# --- (b): gzip bodies that inflate to max_body of JSON, each one unit ------------------------------------------------
def gzip_bomb(port: int, key: str, counts: dict[str, int], source: str = "127.0.40.1", connections: int = 8,
              limit: int = 3 << 20):
    """`connections` keep-alive connections from `source` posting, as fast as answered, a ~3 KB gzip body that
    inflates to just under the server's max body: a payload of ~1 M empty JSON objects (worth one unit)."""
    items = (limit - 100) // 3
    body = gzip.compress(b'["r","' + key.encode() + b'",[' + b"{}," * (items - 1) + b"{}]]", 9)
    request = post(body, headers={"grc-compress": "gzip"})

    async def one(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await connect(port, source)
            except OSError:
                counts["refused_connect"] = counts.get("refused_connect", 0) + 1
                await asyncio.sleep(0.1)
                continue
            try:
                while not stop.is_set():
                    writer.write(request)
                    status, _ = await asyncio.wait_for(read_response(reader), 20)
                    counts[str(status)] = counts.get(str(status), 0) + 1
                    if status == 429:
                        await asyncio.sleep(0.05)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
            finally:
                writer.close()

    async def attack(stop: threading.Event) -> None:
        counts["body_bytes"] = len(body)
        await asyncio.gather(*(one(stop) for _ in range(connections)))
    return attack


def test_gzip_bodies_from_one_address_do_not_saturate_the_node(cluster, grapes) -> None:
    a, b = walled_pair(cluster, grapes)
    path = b.status()["router"]["grenache"]
    counts: dict[str, int] = {}
    window = honest_under_attack(a, b, gzip_bomb(path["port"], path["names"][1], counts), seconds=14)
    print(f"\ngzip bodies of {counts.get('body_bytes')} B from one address: {counts}; b {window.usage}; "
          f"{window.honest()}")
    assert window.error is None, window.error
    no_traceback(a, b)
    # one address's share is GRENACHE_MESSAGES_RATE units (500/s): it should not buy most of a core
    assert window.usage.cpu < 0.5, str(window.usage)
    assert window.lost == 0 and p99(window.during) <= LATENCY_BOUND, (p99(window.during), window.lost)


@pytest.mark.soak          # the same mend as the message endpoint's test above; ~11 s, in `make soak`
def test_gzip_bodies_to_the_rpc_endpoint_do_not_saturate_the_node(cluster, grapes) -> None:
    port = free_ports(1)[0]
    b = hybrid(cluster, "b", grapes[0], grenache_rpc_port=port)
    counts: dict[str, int] = {}
    assert b.proc is not None
    with Usage(b.proc.pid) as usage, Background(gzip_bomb(port, "ping", counts, limit=1 << 20)) as attack:
        time.sleep(10)
    print(f"\nRPC endpoint, gzip bodies of {counts.get('body_bytes')} B inflating to 1 MiB: {counts}; b {usage}")
    assert attack.error is None, attack.error
    no_traceback(b)
    assert usage.cpu < 0.5, str(usage)


# --- (a) + (c): every connection slot held by idle keep-alive connections from five /24s ----------------------------
def hold_slots(port: int, key: str, counts: dict[str, int], subnets: int = 5):
    """From 127.0.<50+s>.1-4 (4 addresses x 64 connections per /24, the per-address and per-/24 caps), one hello
    each, then the connection kept with another hello every 8 s (under the 15 s keep-alive; 1 unit each)."""
    request = post(grenache_body(key, {"v": 1, "op": "hello"}))

    async def one(source: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await connect(port, source)
                while not stop.is_set():
                    writer.write(request)
                    status, _ = await asyncio.wait_for(read_response(reader), 10)
                    counts[str(status)] = counts.get(str(status), 0) + 1
                    for _ in range(80):
                        if stop.is_set():
                            break
                        await asyncio.sleep(0.1)
                writer.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.5)

    async def attack(stop: threading.Event) -> None:
        sources = [f"127.0.{50 + s}.{i + 1}" for s in range(subnets) for i in range(4)]
        await asyncio.gather(*(one(src, stop) for src in sources for _ in range(64)))
    return attack


@pytest.mark.soak          # ~20 s, in `make soak`; the mend is unit-tested in tests/unit/node/test_api_guard.py
def test_idle_connections_from_five_subnets_do_not_lock_a_newcomer_out(cluster, grapes) -> None:
    b = hybrid(cluster, "b", grapes[1], **WALLED)
    wait_until(lambda: b.status()["router"]["grenache"]["port"], 10, message="b's message endpoint")
    path = b.status()["router"]["grenache"]
    counts: dict[str, int] = {}
    with Background(hold_slots(path["port"], path["names"][1], counts)) as attack:
        wait_until(lambda: b.status()["router"]["grenache"]["limits"]["connections"]["open"] >= 1000, 20,
                   message="the attacker holds the slots")
        a = hybrid(cluster, "a", grapes[0], **WALLED)
        joined = time.monotonic()
        try:
            wait_until(lambda: b.node_id in grenache_members(a), 20, message="the newcomer a finds b")
            sent = [a.api("POST", "/debug/send", {"node_id": b.node_id, "payload": {"n": i}})[1] for i in range(5)]
            wait_until(lambda: {s["id"] for s in sent} <= {r[0] for r in b.get("/debug/received?type=note")["received"]},
                       10, message="b got the newcomer's unicasts")
        finally:
            guard = b.status()["router"]["grenache"]["limits"]["connections"]
            print(f"\nslots: {counts}; b's guard {guard}; a's grenache counters "
                  f"{a.status()['router']['grenache']['counters']} after {time.monotonic() - joined:.1f} s")
    assert attack.error is None, attack.error
    no_traceback(a, b)


# --- (c) + (d) + (e): slow, lying and odd clients are cut or answered, and counted where they are -------------------
def test_slow_lying_and_odd_requests_are_cut_or_answered_without_a_traceback(cluster, grapes) -> None:
    b = hybrid(cluster, "b", grapes[0], grenache_header_timeout=2, grenache_body_timeout=2, **WALLED)
    wait_until(lambda: b.status()["router"]["grenache"]["port"], 10, message="b's message endpoint")
    path = b.status()["router"]["grenache"]
    port, key = path["port"], path["names"][1]
    hello = grenache_body(key, {"v": 1, "op": "hello"})

    async def exchange(source: str, data: bytes, trickle: float = 0.0, timeout: float = 8.0,
                       prefix: bytes = b"") -> tuple[Any, float]:
        reader, writer = await connect(port, source)
        started = time.monotonic()
        try:
            writer.write(prefix)
            if trickle:
                for i in range(len(data)):
                    writer.write(data[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(trickle)
                    if reader.at_eof() or writer.is_closing():
                        break
            else:
                writer.write(data)
            return await asyncio.wait_for(read_response(reader), timeout), time.monotonic() - started
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            return type(exc).__name__, time.monotonic() - started
        finally:
            writer.close()

    async def pipelined(source: str) -> list[tuple[int, bytes]]:
        reader, writer = await connect(port, source)
        writer.write(post(hello) * 3)
        answers = [await asyncio.wait_for(read_response(reader), 5) for _ in range(3)]
        writer.close()
        return answers

    async def main() -> dict[str, Any]:
        head = post_head(len(hello))
        cases = {
            "headers_trickled": exchange("127.0.60.1", head + hello, trickle=0.3),
            "body_trickled": exchange("127.0.60.2", hello, trickle=0.3, prefix=head),
            "length_lie": exchange("127.0.60.3", post_head(len(hello) + 1000) + hello),
            "chunk_huge": exchange("127.0.60.4", post_head(None, headers={"Transfer-Encoding": "chunked"})
                                   + b"FFFFFFFFFFFF\r\n" + b"[" * 4096),
            "chunked_over_max": exchange("127.0.60.5", post_head(None, headers={"Transfer-Encoding": "chunked"})
                                         + b"".join(b"100000\r\n" + b" " * 0x100000 + b"\r\n" for _ in range(4))
                                         + b"0\r\n\r\n"),
            "length_over_max": exchange("127.0.60.6", post_head(64 << 20) + b" " * 1024),
            "http10": exchange("127.0.60.7", post(hello, version="1.0")),
            "garbage": exchange("127.0.60.8", post(b"\x00\xff not json")),
            "null_rid": exchange("127.0.60.9", post(b"[null, 1, 2]")),
            "huge_int_rid": exchange("127.0.60.10", post(b"[123456789012345678901234567890, 1]")),
            "bad_gzip": exchange("127.0.60.11", post(b"\x1f\x8b\x08\x00garbage", headers={"grc-compress": "gzip"})),
            "gzip_bomb": exchange("127.0.60.12", post(gzip.compress(b" " * (64 << 20), 9),
                                                      headers={"grc-compress": "gzip"})),
            "other_path": exchange("127.0.60.13", post(hello, path="/x")),
            "unknown_key": exchange("127.0.60.14", post(grenache_body("nope", {}))),
            "bad_frames": exchange("127.0.60.15", post(grenache_body(key, {"v": 1, "frames": ["!!"] * MAX_FRAMES}))),
            "frames_not_list": exchange("127.0.60.16", post(grenache_body(key, {"v": 1, "frames": {"a": 1}}))),
            "deep_json": exchange("127.0.60.17", post(b'["r", "' + key.encode() + b'", ' + b"[" * 5000 + b"]" * 5000
                                                      + b"]")),
        }
        results: dict[str, Any] = dict(zip(cases, await asyncio.gather(*cases.values())))
        results["pipelined"] = await pipelined("127.0.60.18")
        # X-Forwarded-For does not move a client's share: a flood naming 127.0.0.1 is refused as itself
        flood = post(grenache_body(key, {"v": 1, "frames": note_frames(MAX_FRAMES)}),
                     headers={"grc-compress": "none", "X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1",
                              "X-Real-IP": "127.0.0.1"})
        reader, writer = await connect(port, "127.0.61.1")
        statuses = []
        for _ in range(12):
            writer.write(flood)
            statuses.append((await read_response(reader))[0])
        writer.close()
        results["xff_flood"] = statuses
        return results

    results = asyncio.run(main())
    for name, value in results.items():
        print(f"{name}: {str(value)[:160]}")

    def status(name: str) -> Any:
        value = results[name]
        return value[0][0] if isinstance(value, tuple) and isinstance(value[0], tuple) else value[0]

    # a trickler that keeps writing without reading sees the 408 and, LINGER (2 s) later, a reset
    cut = (408, "ConnectionResetError", "IncompleteReadError", "BrokenPipeError")
    for name in ("headers_trickled", "body_trickled", "length_lie", "chunk_huge", "length_over_max"):
        assert status(name) in cut and results[name][1] < 5, (name, results[name])
    assert status("chunked_over_max") == 413
    assert status("http10") == 200 and status("gzip_bomb") == 413 and status("bad_gzip") == 400
    assert status("garbage") == 400 and status("null_rid") == 400 and status("huge_int_rid") == 400
    for name in ("unknown_key", "bad_frames", "frames_not_list", "deep_json"):
        value = results[name]
        assert isinstance(value, tuple) and isinstance(value[0], tuple) and value[0][0] in (200, 400), (name, value)
        if value[0][0] == 200:
            reply = orjson.loads(value[0][1])
            assert isinstance(reply, list) and len(reply) == 3, (name, reply)     # a Grenache reply, never hangs
    assert [s for s, _ in results["pipelined"]] == [200, 200, 200]
    assert 429 in results["xff_flood"]
    limits = b.status()["router"]["grenache"]["limits"]
    refused_by = {row["source"] for row in limits["refused_by"]["addresses"]}
    assert "127.0.61.1" in refused_by and "127.0.0.1" not in refused_by, refused_by
    assert limits["connections"]["counters"]["body_timeouts"] >= 2, limits
    wait_until(lambda: b.status()["router"]["grenache"]["limits"]["connections"]["open"] == 0, 10,
               message="every attacking socket released")
    assert b.proc is not None and b.proc.poll() is None                  # tracebacks: FINDING 10, the test below


def test_a_request_cut_at_its_body_deadline_logs_no_traceback(cluster, grapes) -> None:
    b = hybrid(cluster, "b", grapes[0], grenache_body_timeout=1, **WALLED)
    wait_until(lambda: b.status()["router"]["grenache"]["port"], 10, message="b's message endpoint")
    port = b.status()["router"]["grenache"]["port"]

    async def stalled(source: str) -> None:
        reader, writer = await connect(port, source)
        writer.write(post_head(100) + b"[")
        try:
            await asyncio.wait_for(read_response(reader), 5)
        finally:
            writer.close()

    asyncio.run(stalled("127.0.62.1"))
    time.sleep(3.5)                                                           # past LINGER: the socket dropped
    no_traceback(b)
