"""Attacks on the public limits' newest mends (p2p/public/rate.py's reserve, settle and HEADROOM; p2p/public/guard.py's
eviction when every slot is taken) on real exchange-node processes: the Grenache message endpoint of a node b that an
honest node a reaches only over Grenache (`walled_pair`). Attackers post from other loopback /24s (127.0.N.x, each a
network of its own to the limits). Each test asserts the defence: the honest node's requests are not refused, its
unicasts arrive in time, a newcomer gets in."""
from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from p2p.routing.grenache_path import MAX_FRAMES
from tests.harness import wait_until
from tests.interop.grenache_harness import grapes, require_node  # noqa: F401 - fixtures
from tests.interop.test_grenache_messages import hybrid, walled_pair
from tests.redteam.grenache_attack import (Background, connect, honest_under_attack, cpu_seconds, grenache_body, loadavg,
                                           p99, post, post_head, read_response, rss_mb)
from tests.redteam.test_grenache_endpoints import LATENCY_BOUND, WALLED, no_traceback

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


# --- (3) headroom: many small networks, each light by turns, keep the total empty ------------------------------------
HEADROOM_NETWORKS = 64           # /24s, one address and one keep-alive connection each
HEADROOM_PAUSE = (0.1, 0.3)      # s between one connection's requests: ~320 requests/s in all, ~35/s admitted


def light_networks(port: int, key: str, counts: dict[str, int], networks: int = HEADROOM_NETWORKS):
    """From 127.0.<100+n>.1, one keep-alive connection each posting a ~1 KB request worth MAX_FRAMES units (256 junk
    frames: refused as malformed, charged all the same) every 0.1-0.3 s, answered 200 or 429 at once. Each network is
    light (under its part of the headroom) again ~0.7 s after it took 256 units, so between them the total is
    kept near zero and a light honest sender has to win a race for each token."""
    request = post(grenache_body(key, {"v": 1, "frames": ["!!"] * MAX_FRAMES}))

    async def one(source: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await connect(port, source)
            except OSError as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.5)
                continue
            try:
                while not stop.is_set():
                    writer.write(request)
                    status, _ = await asyncio.wait_for(read_response(reader), 10)
                    counts[str(status)] = counts.get(str(status), 0) + 1
                    await asyncio.sleep(random.uniform(*HEADROOM_PAUSE))
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
            finally:
                writer.close()

    async def attack(stop: threading.Event) -> None:
        await asyncio.gather(*(one(f"127.0.{100 + n}.1", stop) for n in range(networks)))
    return attack


@pytest.mark.soak          # ~35 s; FINDING 11 (fixed: unit-tested in tests/unit/p2p/test_grenache_limits.py)
def test_light_networks_by_turns_do_not_starve_a_light_honest_sender(cluster, grapes) -> None:
    a, b = walled_pair(cluster, grapes)
    path = b.status()["router"]["grenache"]
    counts: dict[str, int] = {}
    window = honest_under_attack(a, b, light_networks(path["port"], path["names"][1], counts))
    limits = window.limits
    others = limits["refused"]["total"] - counts.get("429", 0)        # refused on the total and not the attacker's
    print(f"\nlight networks ({HEADROOM_NETWORKS} /24s): {counts}; b {window.usage}; refused {limits['refused']}; "
          f"refused on the total but not to the attacker ~{others}; {window.honest()}")
    assert window.error is None, window.error
    no_traceback(a, b)
    assert counts.get("200", 0) > 0                                              # the attack did take the total
    assert window.failed == 0, (window.failed, others)                           # the light honest node never refused
    assert window.lost == 0 and p99(window.during) <= LATENCY_BOUND, (p99(window.during), window.lost)


# --- (1) + (2): every slot held by requests whose body never comes: none of them is quiet, so none is evicted ------
STALL_SUBNETS = 4                # /24s x 4 addresses x 64 connections = 1,024, every slot, each under its caps


def stalled_bodies(port: int, counts: dict[str, int], subnets: int = STALL_SUBNETS):
    """From 127.0.<70+s>.1-4, 64 connections per address, each sending complete headers (Content-Length 100) and one
    byte of body, then nothing: its request is being handled (admitted, or refused 429 with the body still to be read
    and dropped) until the body deadline cuts it; then the connection is opened again at once."""
    head = post_head(100) + b"["

    async def one(source: str, stop: threading.Event) -> None:
        await asyncio.sleep(random.uniform(0, 8))     # cuts spread over the deadline, not all at once
        while not stop.is_set():
            try:
                reader, writer = await connect(port, source)
            except OSError as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.2)
                continue
            try:
                writer.write(head)
                opened = time.monotonic()
                while not stop.is_set() and not reader.at_eof():
                    try:
                        chunk = await asyncio.wait_for(reader.read(4096), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if not chunk:
                        break
                    counts[chunk[9:12].decode(errors="replace")] = counts.get(chunk[9:12].decode(errors="replace"), 0) + 1
                held = time.monotonic() - opened
                counts["held_over_5s" if held > 5 else "held_under_5s"] = \
                    counts.get("held_over_5s" if held > 5 else "held_under_5s", 0) + 1
            except OSError as exc:          # refused at accept (our cut socket not yet released): again soon
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.01)
            finally:
                writer.close()
            await asyncio.sleep(0.003)          # let the cut socket go first, so the new one fits under the caps

    async def attack(stop: threading.Event) -> None:
        sources = [f"127.0.{70 + s}.{i + 1}" for s in range(subnets) for i in range(4)]
        await asyncio.gather(*(one(src, stop) for src in sources for _ in range(64)))
    return attack


def fresh_request(port: int, request: bytes, source: str = "127.0.90.1") -> str:
    """One honest request on a fresh connection from a network holding nothing: its status, or why it failed."""
    async def go() -> str:
        try:
            reader, writer = await connect(port, source)
        except OSError as exc:
            return type(exc).__name__
        try:
            writer.write(request)
            status, _ = await asyncio.wait_for(read_response(reader), 5)
            return str(status)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            return type(exc).__name__
        finally:
            writer.close()
    return asyncio.run(go())


def newcomer_outcomes(port: int, request: bytes, tries: int = 20) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for _ in range(tries):
        outcome = fresh_request(port, request)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        time.sleep(0.5)
    return outcomes


@pytest.mark.soak          # ~30 s; FINDING 12 (fixed: unit-tested in tests/unit/node/test_api_guard.py)
def test_stalled_bodies_from_four_subnets_do_not_lock_a_newcomer_out(cluster, grapes) -> None:
    b = hybrid(cluster, "b", grapes[1], **WALLED)
    wait_until(lambda: b.status()["router"]["grenache"]["port"], 10, message="b's message endpoint")
    path = b.status()["router"]["grenache"]
    hello = post(grenache_body(path["names"][1], {"v": 1, "op": "hello"}), headers={"Connection": "close"})
    counts: dict[str, int] = {}
    assert b.proc is not None
    t0, cpu0 = time.monotonic(), cpu_seconds(b.proc.pid)
    with Background(stalled_bodies(path["port"], counts)) as attack:
        # the attack in full swing: every one of its 1,024 connections has been opened and has sent its request
        wait_until(lambda: sum(counts.values()) >= 1024, 25, message="the attacker's connections all tried")
        # a newcomer's hello on a fresh connection every 0.5 s for 10 s (what a joining node, or one whose pooled
        # connection closed, does first); unattacked, every one is answered 200
        outcomes = newcomer_outcomes(path["port"], hello)
        guard = b.status()["router"]["grenache"]["limits"]["connections"]
    print(f"\nstalled bodies: {counts}; a newcomer's 20 fresh hellos over 10 s: {outcomes}; b's guard {guard}; "
          f"b's CPU {(cpu_seconds(b.proc.pid) - cpu0) / (time.monotonic() - t0):.2f} s/s, RSS {rss_mb(b.proc.pid):.0f} MB, "
          f"load {loadavg():.2f}")
    assert attack.error is None, attack.error
    assert outcomes.get("200", 0) >= 18, outcomes
    no_traceback(b)


def stalled_gets(port: int, counts: dict[str, int], subnets: int, per_address: int):
    """The same on the control API: `GET /status` with Content-Length 100 and one byte of body, from
    127.0.<80+s>.1-2, `per_address` connections each (2 /24s x 2 x 512 = API_MAX_CONNECTIONS)."""
    head = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n["

    async def one(source: str, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await connect(port, source)
            except OSError as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.2)
                continue
            try:
                writer.write(head)
                while not stop.is_set() and not reader.at_eof():
                    try:
                        if not await asyncio.wait_for(reader.read(65536), 0.5):
                            break
                    except asyncio.TimeoutError:
                        continue
                counts["cycles"] = counts.get("cycles", 0) + 1
            except OSError as exc:
                counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.05)
            finally:
                writer.close()

    async def attack(stop: threading.Event) -> None:
        sources = [f"127.0.{80 + s}.{i + 1}" for s in range(subnets) for i in range(2)]
        await asyncio.gather(*(one(src, stop) for src in sources for _ in range(per_address)))
    return attack


@pytest.mark.soak          # ~25 s; FINDING 12 (fixed: unit-tested in tests/unit/node/test_api_guard.py), on the control API
def test_stalled_bodies_do_not_lock_a_newcomer_out_of_the_control_api(cluster) -> None:
    node = cluster.node("n")
    port = int(node.api_url.rsplit(":", 1)[1])
    counts: dict[str, int] = {}
    get = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    with Background(stalled_gets(port, counts, subnets=2, per_address=512)) as attack:
        wait_until(lambda: counts.get("cycles", 0) >= 2048, 20, message="the attacker's connections all tried")
        outcomes = newcomer_outcomes(port, get)
    wait_until(lambda: fresh_request(port, get) == "200", 15, message="the API answers again")
    connections = node.status()["api_connections"]
    print(f"\ncontrol API, stalled GETs: {counts}; a newcomer's 20 fresh GETs over 10 s: {outcomes}; guard after "
          f"{connections}; load {loadavg():.2f}")
    assert attack.error is None, attack.error
    assert outcomes.get("200", 0) >= 18, outcomes
    no_traceback(node)
