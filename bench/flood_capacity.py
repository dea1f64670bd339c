"""The flood benchmark's capacity rows (`python -m bench flood --capacity`): attacks on what every client shares,
each at 1x, 3x and 10x, on the flood rig (four validators and a follower, honest traders at the follower) with the
loopback exemptions off on the validators, since every attacker here is on loopback and the exemptions would hide
the limits under test.

- token client: a client holding validator 0's token sends 250-order refills and cancel-alls from x accounts (the
  filed attack is ten) to its own API as fast as it answers; "admitted" is the answers by status.
- many networks: 5x /24s (1x: as many as the handshake total's worth at one network's rate) of four addresses each
  open connections to validator 0 as fast as they go, while a newcomer from another /24 opens a link every half
  second; "admitted" is how many of the newcomer's opened.
- expansion frames: 4x frames a second of just under a megabyte of empty arrays (the filed attack is 4 a second),
  each on a link of a fresh key from one of eight /24s; "admitted" is how many links the node cut with
  `frame_too_complex`, and handshakes it refused.
- relay slots: x times the reservation table (64) asked for, four per /24, each link kept alive; then a newcomer from
  an unseen network asks for one; "admitted" is the newcomer's answer and the table's evictions.
- stream slots: x times the stream's clients (WS_MAX_CLIENTS, lowered to STREAM_SLOTS on validator 0) open from as
  many /24s, one each, and stay; a newcomer from another network subscribes every half second; "admitted" is how
  many of the newcomer's got their snapshot.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Callable

import aiohttp

from node.identity import NodeIdentity
from p2p.framing import encode_frame
from tests.flood import stay_linked
from tests.harness import NodeProcess
from tests.redteam.attacker import linked
from tests.stream_client import StreamClient
from tests.wire import HandshakeRefused, RawPeer

STREAM_SLOTS = 100          # WS_MAX_CLIENTS on validator 0 for these rows (1,000 by default; 10x that is 10,000
                            # sockets from this one process)
RELAY_TABLE = 64            # RELAY_MAX_RESERVATIONS's default
FRAMES_PER_SECOND = 4.0     # expansion frames a second at 1x (the filed attack)
HANDSHAKE_NETWORKS = 5      # /24s at 1x: INBOUND_HANDSHAKE_RATE_TOTAL (100) over one network's rate (20)
# validator 0 takes links from the crowds below and from the other nodes (all from 127.0.0.1); the exemption off
CAPACITY_SETTINGS: dict[str, Any] = {"inbound_limit_loopback": "true", "max_inbound_per_ip": 8,
                                     "api_rate_exempt": "10.255.255.255/32", "max_peers": 400,
                                     "ws_max_clients": STREAM_SLOTS}
LEVELS = (1, 3, 10)
STREAM_ERRORS = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError, AssertionError, OSError)


def plan() -> list[tuple[str, int]]:
    return [(name, level) for name in ROWS for level in LEVELS]


def token_client(target: NodeProcess, window: float, accounts: int) -> tuple[float, str]:
    names = [f"holder{accounts}x{n}" for n in range(accounts)]
    target.new_accounts(*names)
    answers: dict[int, int] = {}
    headers = target.auth_headers()
    deadline = time.monotonic() + window
    orders = [{"market": "BTC-USD", "side": "buy", "price": str(40 + n % 10), "qty": "0.01"} for n in range(250)]
    sent = 0

    async def account(session: aiohttp.ClientSession, name: str) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            for path, body in (("/orders/batch?wait=0", {"orders": orders, "account": name}),
                               ("/orders/cancel-all?wait=0", {"account": name})):
                try:
                    async with session.post(target.api_url + path, json=body, headers=headers) as response:
                        await response.read()
                        answers[response.status] = answers.get(response.status, 0) + 1
                except aiohttp.ClientError:
                    answers[0] = answers.get(0, 0) + 1
                sent += 1

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(account(session, name) for name in names))
    started = time.monotonic()
    asyncio.run(run())
    rate = target.status()["exchange"]["account_rate"]["refused_by"]
    return sent / (time.monotonic() - started), \
        f"answers {dict(sorted(answers.items()))}; refused by {rate}"


async def _newcomer_links(port: int, until: float, interval: float = 0.5) -> list[str]:
    results = []
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.2.0.1", 0))
            peer = RawPeer(reader, writer)
            try:
                await peer.handshake(NodeIdentity.generate())
                results.append("open")
            finally:
                peer.close()
        except (HandshakeRefused, ConnectionError, TimeoutError, OSError) as exc:
            results.append(type(exc).__name__)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))
    return results


def many_networks(target: NodeProcess, window: float, level: int) -> tuple[float, str]:
    networks = HANDSHAKE_NETWORKS * level
    made = 0

    async def dial(source: str, until: float) -> None:
        nonlocal made
        while time.monotonic() < until:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", target.p2p_port, local_addr=(source, 0))
                made += 1
                writer.close()
            await asyncio.sleep(0)

    async def run() -> list[str]:
        until = time.monotonic() + window
        crowd = [asyncio.create_task(dial(f"127.1.{n}.{i}", until)) for n in range(networks) for i in range(1, 5)]
        await asyncio.sleep(min(1.0, window / 4))      # the crowd first
        results = await _newcomer_links(target.p2p_port, until)
        await asyncio.gather(*crowd)
        return results
    before = target.status()["p2p"]["close_reasons"].get("too_many_handshakes", 0)
    started = time.monotonic()
    results = asyncio.run(run())
    refused = target.status()["p2p"]["close_reasons"].get("too_many_handshakes", 0) - before
    return made / (time.monotonic() - started), \
        f"newcomer {results.count('open')}/{len(results)} open; {networks} /24s made {made:,}, {refused:,} refused"


def expansion_frames(target: NodeProcess, window: float, level: int, chain_id: str) -> tuple[float, str]:
    frame = encode_frame({"type": "chain_tx", "body": [[[] for _ in range(99_000)] for _ in range(10)]})
    pace = 1.0 / (FRAMES_PER_SECOND * level)
    reasons: dict[str, int] = {}

    async def one(index: int) -> None:
        try:
            peer = await linked(target, NodeIdentity.generate(), chain_id, f"127.0.{40 + index % 8}.{1 + index // 8 % 200}")
        except (HandshakeRefused, ConnectionError, TimeoutError, OSError) as exc:
            reasons[type(exc).__name__] = reasons.get(type(exc).__name__, 0) + 1
            return
        try:
            peer.send_plain(frame)
            try:
                reason, _ = await peer.until_goodbye(5.0)
            except TimeoutError:
                reason = "still_open"
        finally:
            peer.close()
        reasons[reason or "closed"] = reasons.get(reason or "closed", 0) + 1

    async def run() -> int:
        started, tasks = time.monotonic(), []
        while time.monotonic() < started + window:
            tasks.append(asyncio.create_task(one(len(tasks))))
            await asyncio.sleep(max(0.0, started + len(tasks) * pace - time.monotonic()))
        await asyncio.gather(*tasks)
        return len(tasks)
    started = time.monotonic()
    count = asyncio.run(run())
    return count / (time.monotonic() - started), f"{count} frames: {dict(sorted(reasons.items()))}"


async def _reserve(relay: NodeProcess, source: str) -> tuple[RawPeer | None, str]:
    try:
        peer = await RawPeer.connect("127.0.0.1", relay.p2p_port, local_host=source)
        await peer.handshake(NodeIdentity.generate())
    except (HandshakeRefused, ConnectionError, TimeoutError, OSError) as exc:
        return None, type(exc).__name__
    peer.send({"type": "relay.reserve"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = await peer.next_message(max(0.1, deadline - time.monotonic()))
        if message is None:
            peer.close()
            return None, "closed"
        if message["type"] == "relay.reservation":
            return peer, str(message["status"])
    peer.close()
    return None, "no answer"


def relay_slots(target: NodeProcess, window: float, level: int) -> tuple[float, str]:
    asked = RELAY_TABLE * level

    async def run() -> tuple[dict[str, int], str]:
        crowd: list[RawPeer] = []
        alive: list[asyncio.Task[None]] = []
        answers: dict[str, int] = {}
        try:
            for n in range(asked):
                peer, status = await _reserve(target, f"127.3.{n // 4 % 250}.{1 + n % 4 + 4 * (n // 1000)}")
                answers[status] = answers.get(status, 0) + 1
                if peer is not None:
                    crowd.append(peer)
                    alive.append(asyncio.create_task(stay_linked(peer, interval=0.5)))
            newcomer, status = await _reserve(target, "127.4.0.1")
            if newcomer is not None:
                newcomer.close()
            await asyncio.sleep(max(0.0, started + window - time.monotonic()))    # held for the window
            return answers, status
        finally:
            for task in alive:
                task.cancel()
            for peer in crowd:
                peer.close()
    before = target.status()["nat"]["relay_service"]["counters"].get("reservations_evicted", 0)
    started = time.monotonic()
    answers, newcomer = asyncio.run(run())
    evicted = target.status()["nat"]["relay_service"]["counters"].get("reservations_evicted", 0) - before
    return asked / (time.monotonic() - started), f"crowd {answers}; newcomer {newcomer}; {evicted} evicted"


def stream_slots(target: NodeProcess, window: float, level: int) -> tuple[float, str]:
    clients = STREAM_SLOTS * level

    async def hold(source: str, stop: asyncio.Event, held: list[int]) -> None:
        try:
            client = await StreamClient.connect(target.api_url, local_address=source)
        except STREAM_ERRORS:   # refused (429/503) or reset: what the row counts is what was held
            return
        held[0] += 1
        try:
            await stop.wait()
        finally:
            await client.close()

    async def newcomer() -> bool:
        try:
            client = await StreamClient.connect(target.api_url, local_address="127.5.0.1")
        except STREAM_ERRORS:
            return False
        try:
            chan = await client.subscribe("book", market="BTC-USD")
            await client.wait_for(lambda: chan in client.data, timeout=5)
            return True
        except STREAM_ERRORS:
            return False
        finally:
            await client.close()

    async def run() -> tuple[int, list[bool]]:
        stop, held = asyncio.Event(), [0]
        until = time.monotonic() + window
        tasks = []
        for n in range(clients):
            tasks.append(asyncio.create_task(hold(f"127.{10 + n // 250}.{n % 250}.1", stop, held)))
            if n % 50 == 49:
                await asyncio.sleep(0)
        results = []
        while time.monotonic() < until:
            began = time.monotonic()
            results.append(await newcomer())
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - began)))
        stop.set()
        await asyncio.gather(*tasks)
        return held[0], results
    started = time.monotonic()
    held, results = asyncio.run(run())
    return clients / (time.monotonic() - started), \
        f"newcomer {sum(results)}/{len(results)} subscribed; {clients} /24s held {held} at once or in turn"


Attack = Callable[..., tuple[float, str]]
ROWS: dict[str, Attack] = {"token client": token_client, "many networks": many_networks,
                           "expansion frames": expansion_frames, "relay slots": relay_slots,
                           "stream slots": stream_slots}
