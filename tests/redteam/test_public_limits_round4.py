"""Round 4 on the public limits: p2p/public/rate.py `TotalParts` as of cac7a6c (parts two seconds deep among the
networks holding one, the level rising at most 2x a second, demand counted at settle, newcomers starting with a
unit). Fake clock, in-process, a few seconds in all; see FINDINGS 19-23."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from p2p.grenache.limits import GrenacheLimits, ServerLimits
from p2p.grenache.rpc import GrenacheHTTPServer
from p2p.public.rate import ClientRate
from p2p.routing.grenache_path import MAX_FRAMES
from tests.redteam.test_public_limits_round2 import PER_ADDRESS, TOTAL, Clock, ask
from tests.redteam.test_public_limits_round3 import message_rate

HONEST = "192.0.2.1"        # an honest client's address (its /24 known to the node before the attack)


def let_in(rate: ClientRate, clock: Clock, addresses: list[str], reserve: float = MAX_FRAMES) -> None:
    """Each address's network admitted once (one unit) through the newcomers' gate, at its pace (16 a second)."""
    for address in addresses:
        while (refused := rate.check(address, reserve)) is not None:
            clock.t += max(refused[1], 0.001)
        if reserve > 1:
            rate.settle(address, 1, reserve)


def quiet_known(networks: int, clock: Clock) -> tuple[ClientRate, list[str]]:
    """The honest network and `networks` attacker /24s known to the message endpoint (let in once each), then 40 s
    of quiet."""
    rate = message_rate(clock)
    ask(rate, HONEST, 1)
    nets = attackers(networks)
    let_in(rate, clock, nets)
    clock.t += 40
    return rate, nets


def attackers(networks: int, first: int = 10) -> list[str]:
    return [f"{first + k // 65536}.{k // 256 % 256}.{k % 256}.1" for k in range(networks)]


# --- (1) a known network locked out once more than 2 x total networks are remembered --------------------------------
def returning_client(total: float, per_address: float, networks: int, seconds: float = 30.0,
                     every: float = 0.5) -> tuple[int, int, float]:
    """An honest API / RPC client (one unit a request) known to the node; then `networks` other /24s ask once each
    (through the newcomers' gate: networks / 16 s) and never again. The honest client asks every `every` s for
    `seconds`. (its requests, admitted, the total's part depth)."""
    clock = Clock()
    rate = ClientRate(per_address, total, surface="api", clock=clock)
    assert rate.check(HONEST) is None
    let_in(rate, clock, attackers(networks), reserve=1)
    sent = admitted = 0
    end = clock.t + seconds
    while clock.t < end:
        sent += 1
        admitted += rate.check(HONEST) is None
        clock.t += every
    return sent, admitted, rate.parts._depth()


@pytest.mark.parametrize("total, per_address, networks", [(1000.0, 20.0, 2100), (2000.0, 100.0, 4100)],
                         ids=["api", "grenache_rpc"])
def test_a_known_client_still_gets_in_once_many_networks_were_heard(total: float, per_address: float,
                                                                    networks: int) -> None:
    sent, admitted, depth = returning_client(total, per_address, networks)
    print(f"\ntotal {total:.0f}/s, {networks} other /24s heard once: part depth {depth:.2f}; honest client "
          f"(2 a second) admitted {admitted} of {sent}")
    assert admitted >= sent * 0.9, (sent, admitted, depth)


# --- (2) pulling the level down: a cheap burst of refusals, then the 2x-a-second rise --------------------------------
def level_pulled_down(networks: int, period: float, seconds: float = 30.0, step: float = 0.05,
                      ) -> tuple[float, int, int, float]:
    """`networks` /24s known to the message endpoint (let in once each, then quiet for 40 s); every `period` s each
    asks at once until refused (one frame each: two admitted, the third refused by a part ~2 frames deep, so
    the network is 'short' for 2 s). The honest network sends 20 one-frame requests a second. (attacker frames/s,
    honest sent, refused, lowest level)."""
    clock = Clock()
    rate, nets = quiet_known(networks, clock)
    burst_due = honest_due = clock.t
    end = clock.t + seconds
    frames = sent = refused = 0
    lowest = TOTAL
    while clock.t < end:
        if clock.t >= burst_due:
            for address in nets:
                for _ in range(64):         # until its part refuses it (two asks out of 8,000 networks)
                    if not ask(rate, address, 1):
                        break
                    frames += 1
            burst_due += period
        while honest_due <= clock.t:
            sent += 1
            refused += not ask(rate, HONEST, 1)
            honest_due += 0.05
        lowest = min(lowest, rate.parts._level)
        clock.t += step
    return frames / seconds, sent, refused, lowest


def test_a_burst_of_refusals_does_not_starve_an_honest_sender_for_seconds() -> None:
    used, sent, refused, lowest = level_pulled_down(8000, period=6.0)
    print(f"\n8,000 known /24s, 2 frames each every 6 s: {used:.0f} frames/s ({100 * used / TOTAL:.0f} % of the "
          f"total); level down to {lowest:.2f}/s; honest (20/s) refused {refused} of {sent}")
    assert used < TOTAL * 0.5
    assert refused <= sent * 0.05, (used, sent, refused, lowest)


# --- (3) shallow parts: an honest node's concurrent requests --------------------------------------------------------
def concurrent_batches(networks: int, batch: int, frames: int = 5, seconds: float = 10.0) -> tuple[int, int]:
    """`networks` /24s known to the message endpoint and idle since; the honest network sends `batch` requests at
    once (each admitted on MAX_FRAMES before any is read, then settled at `frames`), 20 / batch times a second.
    (requests, refused)."""
    clock = Clock()
    rate = ClientRate(PER_ADDRESS, TOTAL, surface="grenache_msg", clock=clock)
    ask(rate, HONEST, 1)
    let_in(rate, clock, attackers(networks))
    clock.t += 40
    sent = refused = 0
    end = clock.t + seconds
    while clock.t < end:
        admitted = 0
        for _ in range(batch):
            sent += 1
            if rate.check(HONEST, MAX_FRAMES) is None:
                admitted += 1
            else:
                refused += 1
        for _ in range(admitted):
            rate.settle(HONEST, frames, MAX_FRAMES)
        clock.t += batch / 20
    return sent, refused


def test_sequential_requests_fit_a_part_two_frames_deep() -> None:
    """Held: 8,000 idle known networks leave a part 1.95 frames deep, but it refills at the whole rate: one request
    at a time (20 a second, 5 frames each) is never refused."""
    sent, refused = concurrent_batches(8000, batch=1)
    assert refused == 0, (sent, refused)


def test_concurrent_requests_are_not_refused_while_the_total_is_idle() -> None:
    few = concurrent_batches(10, batch=2)
    sent, refused = concurrent_batches(100, batch=2)
    print(f"\nhonest 2 concurrent requests x 10 a second: refused {few[1]} of {few[0]} with 10 networks known, "
          f"{refused} of {sent} with 100 (idle)")
    assert few[1] == 0
    assert refused <= sent * 0.05, (sent, refused)


# --- (4) debt: each part may go a whole request below zero, whatever its depth ----------------------------------------
def debt_burst(networks: int, after: float = 20.0, step: float = 0.05) -> tuple[int, int, int, float]:
    """`networks` /24s known to the message endpoint, quiet for 40 s; then each sends one request of MAX_FRAMES
    frames (full cost) at the same instant. The honest network sends 20 one-frame requests a second for `after` s.
    (frames admitted in the burst, honest sent, refused, the level at the end)."""
    clock = Clock()
    rate, nets = quiet_known(networks, clock)
    burst = MAX_FRAMES * sum(ask(rate, address, MAX_FRAMES) for address in nets)
    sent = refused = 0
    end = clock.t + after
    while clock.t < end:
        sent += 1
        refused += not ask(rate, HONEST, 1)
        clock.t += step
    return burst, sent, refused, rate.parts._level


def test_quiet_networks_cannot_take_more_than_two_seconds_of_the_total_at_once() -> None:
    burst, sent, refused, level = debt_burst(4000)
    print(f"\n4,000 quiet /24s, one 256-frame request each at once: {burst:,} frames admitted ({burst / TOTAL:.0f} s "
          f"of the total); honest (20/s) refused {refused} of {sent} over the next 20 s; level {level:.1f}/s")
    assert burst <= 2 * TOTAL * 1.5, burst
    assert refused <= sent * 0.05, (sent, refused)


# --- (5) the level's rise after a long silence ----------------------------------------------------------------------
def test_a_surface_quiet_for_twenty_minutes_still_answers() -> None:
    clock = Clock()
    rate = ClientRate(20.0, 1000.0, surface="api", clock=clock)
    assert rate.check(HONEST) is None
    clock.t += 20 * 60
    assert rate.check(HONEST) is None
    clock.t += 60
    assert rate.check("198.51.100.7") is None


# --- (6) reserves settled whatever happens to the request -----------------------------------------------------------
def test_every_admitted_reserve_is_settled_when_its_request_fails() -> None:
    """Held: GrenacheHTTPServer._handle settles in `finally` (at one unit when not read or decoded): a handler that
    raises, a cost function that raises, an invalid body and a 413 leave no reserve out, so no network is kept from
    being 'short' (and its demand is counted)."""
    clock = Clock()
    limits = ServerLimits(GrenacheLimits(PER_ADDRESS, TOTAL, 4, 16, 64, 5.0, 10.0), "grenache_msg", "frames",
                          clock=clock)

    def cost(payload: object) -> int:
        if payload == "boom":
            raise RuntimeError("cost failed")
        return 3

    async def handler(payload: object) -> object:
        raise RuntimeError("handler failed")

    server = GrenacheHTTPServer({"svc": handler}, limits=limits, cost=cost, max_cost=MAX_FRAMES,
                                max_body_bytes=1024)

    async def run() -> list[int]:
        app = web.Application(client_max_size=1024)
        app.router.add_post("/", server._handle)
        statuses = []
        async with TestClient(TestServer(app)) as client:
            for body in (b'["r1","svc",{}]', b'["r2","svc","boom"]', b"not json", b"x" * 4096):
                response = await client.post("/", data=body)
                statuses.append(response.status)
                await response.read()
        return statuses

    statuses = asyncio.run(run())
    assert statuses[2:] == [400, 413], statuses
    parts = limits.rate.parts
    assert parts._out == {}, parts._out
    assert parts._demand, "no demand counted"
