"""Round 5 on the public limits: p2p/public/rate.py `TotalParts` with the credit bucket (FINDINGS 21-23's fix: parts
charged at settle, what a request costs beyond its part taken on a credit of two seconds of the total, half of it
kept for networks in use). Fake clock, in-process, a few seconds in all; see FINDINGS 24-27."""
from __future__ import annotations

import asyncio
import gzip
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from p2p.grenache.limits import GrenacheLimits, ServerLimits
from p2p.grenache.rpc import GrenacheHTTPServer
from p2p.public.rate import MAX_TRACKED, Buckets, ClientRate
from p2p.routing.grenache_path import MAX_FRAMES
from tests.redteam.test_public_limits_round2 import PER_ADDRESS, TOTAL, Clock, ask
from tests.redteam.test_public_limits_round3 import message_rate
from tests.redteam.test_public_limits_round4 import HONEST, attackers, let_in, quiet_known


def known(networks: int, clock: Clock) -> tuple[ClientRate, list[str]]:
    """`quiet_known`, and then the honest network sends one frame (its part holds it: in use)."""
    rate, nets = quiet_known(networks, clock)
    assert ask(rate, HONEST, 1)
    return rate, nets


def handled(rate: ClientRate, address: str, frames: int) -> bool:
    """One message request admitted on MAX_FRAMES and handled (not answered busy once decoded)."""
    return rate.check(address, MAX_FRAMES) is None and rate.settle(address, frames, MAX_FRAMES)


# --- (1) networks in use drain the whole credit ---------------------------------------------------------------------
def in_use_drain(networks: int, seconds: float = 12.0, step: float = 0.02) -> tuple[float, int, int, float]:
    """`networks` /24s each keep 'in use' (a one-frame request its part holds every 25 s) and send a 256-frame
    request (full cost) whenever the credit lets them: once per 10 s each, from the whole credit. The honest network
    sends 20 one-frame requests a second, under the fair level. (frames/s handled for the attackers, honest sent,
    refused, the level at the end)."""
    clock = Clock()
    rate, nets = known(networks, clock)
    for address in nets:
        ask(rate, address, 1)
    fitted = dict.fromkeys(nets, clock.t)
    frames = sent = refused = 0
    honest_due, end = clock.t, clock.t + seconds
    while clock.t < end:
        for address in nets:
            if clock.t - fitted[address] > 25 and handled(rate, address, 1):
                fitted[address] = clock.t
            frames += MAX_FRAMES * handled(rate, address, MAX_FRAMES)
        while honest_due <= clock.t:
            sent += 1
            refused += not handled(rate, HONEST, 1)
            honest_due += 0.05
        clock.t += step
    return frames / seconds, sent, refused, rate.parts._level


def test_networks_in_use_cannot_refuse_a_network_asking_for_less_than_its_part() -> None:
    used, sent, refused, level = in_use_drain(320)
    print(f"\n320 /24s in use, 256 frames each per 10 s: {used:.0f} frames/s handled; level {level:.1f}/s; honest "
          f"(20 one-frame requests/s) refused {refused} of {sent}")
    assert level > 20, level                    # the honest network asks for less than its part ...
    assert refused <= sent * 0.05, (used, sent, refused)     # ... so it is never refused
    assert used <= TOTAL * 1.1, used            # and the total holds over time


# --- (2) requests bigger than a part shrunk by networks let in never count as in use --------------------------------
def batches_beside_quiet_crowd(networks: int, frames: int, every: float = 0.5, seconds: float = 10.0,
                               ) -> tuple[int, int, float, float]:
    """`networks` quiet /24s each send one 256-frame request (full cost) as soon as the credit lets them (its upper
    half); the honest network (in use) sends one request of `frames` frames every `every` s. (honest sent, refused,
    part depth, level)."""
    clock = Clock()
    rate, pending = known(networks, clock)
    sent = refused = 0
    due, end = clock.t, clock.t + seconds
    while clock.t < end:
        clock.t += 0.01
        pending = [address for address in pending if not handled(rate, address, MAX_FRAMES)]
        if clock.t >= due:
            sent += 1
            refused += not handled(rate, HONEST, frames)
            due += every
    return sent, refused, rate.parts._depth(), rate.parts._level


def test_batches_a_part_holds_are_admitted_beside_quiet_networks_taking_the_credit() -> None:
    """Held (the unit test's case, with bigger requests): 500 known /24s leave parts 32 frames deep; an honest
    network sending 20 frames every 0.5 s fits its part, stays in use and is never refused."""
    sent, refused, depth, _ = batches_beside_quiet_crowd(500, 20)
    assert depth > 20 and refused == 0, (sent, refused, depth)


@pytest.mark.xfail(strict=True, reason="FINDING 25: a network whose requests are bigger than its part (2-32 frames "
                   "once hundreds to thousands of networks are known) never counts as in use")
def test_batches_bigger_than_a_part_are_admitted_beside_quiet_networks_taking_the_credit() -> None:
    sent, refused, depth, level = batches_beside_quiet_crowd(500, 40)
    print(f"\n500 quiet /24s taking the credit in turns; part depth {depth:.1f}, level {level:.0f}/s: honest 40 "
          f"frames every 0.5 s (80 frames/s) refused {refused} of {sent}")
    assert 80 < level                           # far under its part
    assert refused <= sent * 0.05, (sent, refused, depth)


# --- (3) the newcomers' gate raced ----------------------------------------------------------------------------------
def newcomer_race(rate: ClientRate, clock: Clock, seconds: float = 30.0) -> tuple[float, int, int]:
    """An attacker holding IPv6 /48s asks once from a fresh /48 whenever the newcomers' gate holds a token (it is
    told when: the Retry-After of its last refusal); an honest client new to the node asks every 0.5 s from 5 s on
(between the attacker's asks).
    (attacker requests/s, honest tries, admitted)."""
    k, attack_due, honest_due, end = 0, clock.t, clock.t + 5.013, clock.t + seconds
    tries = admitted = 0
    while clock.t < end and not admitted:
        if honest_due <= clock.t:
            tries += 1
            admitted += rate.check("198.51.100.7") is None
            honest_due += 0.5
        if attack_due <= clock.t:
            while (refused := rate.check(f"2001:{0xdb8 + k // 65536:x}:{k % 65536:x}::1")) is None:
                k += 1
            attack_due = clock.t + refused[1]
        clock.t = min(honest_due, attack_due)
    return k / seconds, tries, admitted


@pytest.mark.parametrize("surface", ["api", "grenache_msg"])
def test_a_newcomer_gets_in_while_an_attacker_races_the_newcomers_gate(surface: str) -> None:
    clock = Clock()
    rate = (ClientRate(20.0, 1000.0, surface="api", clock=clock) if surface == "api" else message_rate(clock))
    pace, tries, admitted = newcomer_race(rate, clock)
    print(f"\n{surface}: attacker {pace:.1f} requests/s from fresh /48s; honest newcomer admitted {admitted} of "
          f"{tries} tries")
    assert admitted, (pace, tries)


# --- (4) wait and settle disagree on a part's depth -----------------------------------------------------------------
def busy_with_nothing_between(networks: int, seconds: float = 1.0, step: float = 0.01) -> tuple[int, int]:
    """`networks` /24s let in once each and quiet for 40 s then each send 256-frame requests (full cost), each
    settled as soon as admitted: nothing can take the credit between a request's admission and its settle.
    (handled, answered busy once decoded)."""
    clock = Clock()
    rate, nets = message_rate(clock), attackers(networks)
    let_in(rate, clock, nets)
    clock.t += 40
    ok = busy = 0
    end = clock.t + seconds
    while clock.t < end:
        for address in nets:
            if rate.check(address, MAX_FRAMES) is None:
                if rate.settle(address, MAX_FRAMES, MAX_FRAMES):
                    ok += 1
                else:
                    busy += 1
        clock.t += step
    return ok, busy


def test_a_request_admitted_and_settled_at_once_is_never_answered_busy() -> None:
    ok, busy = busy_with_nothing_between(200)
    print(f"\n200 quiet /24s, 256-frame requests settled as soon as admitted, 1 s: {ok} handled, {busy} read, "
          f"decoded and answered busy")
    assert busy == 0, (ok, busy)


# --- held: what the design promises against these attacks -----------------------------------------------------------
def test_held_bodies_settled_together_stay_within_the_total_and_spare_the_honest_network() -> None:
    """Held: 400 quiet /24s each start a 256-frame request every 0.05 s and send every body at once: the credit
    covers a few, the rest are answered busy (1 unit each); what is handled stays near the total and the honest
    network in use (10 one-frame requests/s, half its part) is never refused."""
    clock = Clock()
    rate, nets = known(400, clock)
    frames = sent = refused = 0
    start, end, tick = clock.t + 5, clock.t + 10, 0
    while clock.t < end:
        tick += 1
        admitted = [address for address in nets if rate.check(address, MAX_FRAMES) is None]
        honest = tick % 2 == 0 and rate.check(HONEST, MAX_FRAMES) is None
        done = sum(rate.settle(address, MAX_FRAMES, MAX_FRAMES) for address in admitted)
        honest = honest and rate.settle(HONEST, 1, MAX_FRAMES)
        if clock.t >= start:
            frames += done * MAX_FRAMES
            sent += tick % 2 == 0
            refused += tick % 2 == 0 and not honest
        clock.t += 0.05
    assert frames / 5 <= TOTAL * 1.2, frames / 5      # 9,114 frames/s
    assert refused == 0, (sent, refused)
    assert rate.parts._out == {}


def test_the_control_api_never_needs_the_credit() -> None:
    """Held: the control API admits on a reserve of one unit, taken from the part at once: with the credit drained
    a known client and a new one are still admitted, and nothing is left out."""
    clock = Clock()
    rate = ClientRate(20.0, 1000.0, surface="api", clock=clock)
    assert rate.check(HONEST) is None
    clock.t += 1
    rate.parts._credit.take("*", clock.t, 1e6)
    assert rate.check(HONEST) is None
    assert rate.check("198.51.100.7") is None
    assert rate.parts._out == {}


def test_a_year_idle_leaves_every_bucket_finite_and_answering() -> None:
    """Held: after a year without a request the virtual clock, the credit and the parts stay finite; a known and a
    new network are admitted and handled."""
    clock = Clock()
    rate, nets = known(50, clock)
    clock.t += 365 * 86400
    assert handled(rate, HONEST, 5) and handled(rate, nets[0], MAX_FRAMES)
    assert handled(rate, "198.51.100.7", 1)
    parts = rate.parts
    values = [parts._virtual, parts._level, parts._credit.tokens("*", clock.t), parts.tokens("192.0.2.0/24", clock.t)]
    assert all(abs(value) < 1e15 for value in values), values


def test_an_ipv6_48_is_one_network_whatever_its_64s() -> None:
    """Held: addresses in different /64s of one /48 share its per-network bucket and its part (the /48 is let in
    once, through the newcomers' gate), while another /48 is a network of its own."""
    clock = Clock()
    rate = message_rate(clock)
    admitted = sum(rate.check(f"2001:db8:1:{n:x}::1", MAX_FRAMES) is None for n in range(40))
    assert admitted == 16 and len(rate.parts) == 1 and len(rate.by_address) == 40, admitted
    refused = rate.check("2001:db8:1:ffff::1", MAX_FRAMES)
    assert refused is not None and refused[0] == "per_subnet", refused
    assert rate.check("2001:db8:2::1", MAX_FRAMES) is None and len(rate.parts) == 2


def test_the_totals_maps_stay_bounded() -> None:
    """Held: 20,000 /48s, each admitted and settled, then refused by its part once, leave at most MAX_TRACKED
    entries in each of the total's maps, and nothing out."""
    clock = Clock()
    rate = message_rate(clock)
    parts = rate.parts
    parts._newcomers = Buckets(1e9, 1e9, limit=1)       # past the gate's pace: only the maps' bounds are tested
    for k in range(20_000):
        address = f"2001:{0xdb8 + k // 65536:x}:{k % 65536:x}::1"
        if rate.check(address, MAX_FRAMES) is None:
            rate.settle(address, 1, MAX_FRAMES)
        network = f"2001:{0xdb8 + k // 65536:x}:{k % 65536:x}::/48"
        parts.take(network, clock.t, parts.tokens(network, clock.t))
        assert parts.wait(network, clock.t, MAX_FRAMES) > 0
        clock.t += 0.001
    sizes = [len(parts._state), len(parts._demand), len(parts._standing), len(parts._short), len(parts._refused)]
    assert max(sizes) <= MAX_TRACKED + 1 and parts._out == {}, sizes


class _FailingRead:
    """Just enough of an aiohttp request for `GrenacheHTTPServer._handle`: its body read fails with `error`."""

    remote = "203.0.113.9"
    headers: dict[str, str] = {"grc-compress": "gzip"}
    content_length: int | None = None

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def read(self) -> bytes:
        raise self.error


def test_every_failure_path_gives_back_the_reserve() -> None:
    """Held: a body cut (the guard's deadline), a cancelled handler (the client left), a gzip body that is not gzip,
    a gzip bomb (413), an empty body, a tiny one and JSON that is no request all settle their reserve: nothing stays
    out, and the address's and network's buckets are back where one unit each left them."""
    clock = Clock()
    limits = ServerLimits(GrenacheLimits(PER_ADDRESS, TOTAL, 64, 64, 256, 5.0, 10.0), "grenache_msg", "frames",
                          clock=clock)

    async def echo(payload: object) -> object:
        return payload

    server = GrenacheHTTPServer({"svc": echo}, limits=limits, cost=lambda payload: 3, max_cost=MAX_FRAMES,
                                max_body_bytes=4096)
    bodies = [gzip.compress(b"x")[:6], b"\x1f\x8b" + b"\x00" * 30, gzip.compress(b" " * 200_000), b"", b"1",
              b'{"a": 1}', b"[true]", b'["r", "svc", 1]']

    async def run() -> list[int]:
        statuses = []
        for error in (ConnectionResetError(), asyncio.CancelledError()):
            try:
                statuses.append((await server._handle(cast(web.Request, _FailingRead(error)))).status)
            except asyncio.CancelledError:
                statuses.append(-1)
        app = web.Application(client_max_size=4096)
        app.router.add_post("/", server._handle)
        async with TestClient(TestServer(app)) as client:
            for body in bodies:
                response = await client.post("/", data=body, headers={"grc-compress": "gzip"})
                statuses.append(response.status)
                await response.read()
        return statuses

    statuses = asyncio.run(run())
    assert statuses == [408, -1, 400, 400, 413, 400, 400, 400, 400, 200], statuses
    rate = limits.rate
    assert rate.parts._out == {}
    spent = {"203.0.113.9": 2.0, "127.0.0.1": len(bodies) - 1 + 3.0}
    for address, units in spent.items():
        assert rate.by_address.tokens(address, clock.t) == pytest.approx(rate.by_address.burst - units)
