"""Storm protection modes: off, shadow (count and log, delay nothing), on, and the canary share."""
from __future__ import annotations

import asyncio
import logging
import random

import pytest

from p2p.delivery_queue import DeliveryQueue
from p2p.resilience.protection import ENFORCE, SHADOW, Protection
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc.router import AdaptiveRouter, RetryPolicy
from p2p.rpc.service import RpcConfig
from tests.unit.p2p.rpc_nodes import link, nodes
from node.configs import peer_config

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_modes_and_verdicts() -> None:
    assert Protection("off").covers() is None and not Protection("off").active
    shadow = Protection("shadow")
    assert shadow.covers() == SHADOW
    assert shadow.limited("rpc.warmup", SHADOW) is False          # counted, never enforced
    assert shadow.counters["rpc.warmup"] == {"enforced": 0, "shadowed": 1}
    on = Protection("on")
    assert on.covers() == ENFORCE and on.limited("dial.rate", ENFORCE) is True
    assert on.counters["dial.rate"]["enforced"] == 1
    assert on.limited("dial.rate", None) is False                  # an uncovered unit is never limited
    for bad in ({"mode": "maybe"}, {"canary": 1.5}, {"canary": -0.1}):
        with pytest.raises(ValueError):
            Protection(**bad)


def test_canary_share_covers_that_fraction_of_units() -> None:
    protection = Protection("on", 0.25, rng=random.Random(7))
    verdicts = [protection.covers() for _ in range(20_000)]
    share = verdicts.count(ENFORCE) / len(verdicts)
    assert 0.23 < share < 0.27
    assert protection.units == {"on": verdicts.count(ENFORCE), "shadow": 0, "bypassed": verdicts.count(None)}
    assert Protection("on", 0.0).covers() is None


def test_shadow_logs_at_most_once_per_interval(caplog) -> None:
    clock = Clock()
    protection = Protection("shadow", log_interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="p2p.protection"):
        for _ in range(50):
            protection.limited("queue.warmup", SHADOW)
        clock.now = 11.0
        protection.limited("queue.warmup", SHADOW)
    lines = [r.getMessage() for r in caplog.records if r.name == "p2p.protection"]
    assert len(lines) == 2 and "would have limited 1 " in lines[0] and "would have limited 50 " in lines[1]
    assert protection.counters["queue.warmup"]["shadowed"] == 51


@pytest.mark.parametrize("mode, ready_at_once", [("on", 1), ("shadow", 100), ("off", 100)])
def test_queue_drain_warmup_by_mode(mode: str, ready_at_once: int) -> None:
    clock = Clock()
    protection = Protection(mode)
    queue = DeliveryQueue(1000, 60.0, start_rate=20.0, clock=clock, protection=protection)
    for i in range(100):
        queue.put("t", {"id": i})
    queue.start_drain("t")
    ready, expired, wait = queue.take("t")
    assert len(ready) == ready_at_once and not expired
    assert (wait > 0) == (mode == "on")
    assert protection.counters["queue.warmup"]["shadowed"] == (99 if mode == "shadow" else 0)


def test_retry_budget_binds_only_enforced_requests() -> None:
    protection = Protection("shadow")
    policy = RetryPolicy(max_attempts=5, budget=RetryBudget(ratio=0.0, min_per_second=0.0, max_balance=1.0),
                         rng=random.Random(1), protection=protection)
    assert policy.next_retry_delay(1, guard=ENFORCE) is not None   # the one retry the budget holds
    assert policy.next_retry_delay(1, guard=ENFORCE) is None       # spent: refused
    assert policy.next_retry_delay(1, guard=SHADOW) is not None    # would be refused: counted, allowed
    assert policy.next_retry_delay(1, guard=None) is not None      # not covered: the budget is not asked
    assert protection.counters["rpc.retry_budget"] == {"enforced": 1, "shadowed": 1}


def test_breaker_is_counted_not_applied_in_shadow() -> None:
    clock = Clock()
    protection = Protection("shadow")
    router = AdaptiveRouter(clock=clock, rng=random.Random(3), protection=protection)
    router.on_start("a", 0.0)
    for _ in range(10):                      # consecutive failures open a's breaker
        router.on_start("a", 0.0)
        router.on_failure("a", "error", 0.01, 0.0)
    assert router.snapshot(0.0)["a"]["breaker"] == "open"
    clock.now = 0.001
    assert router.choose(["a"], 0.001, guard=SHADOW) == "a"
    assert router.snapshot(0.001)["a"]["breaker"] == "open"             # no probe slot was taken
    assert protection.counters["rpc.breaker"]["shadowed"] == 1
    assert router.choose(["a"], 0.002, guard=ENFORCE) is None           # on: it waits out the cooldown
    wait = router.wait_hint(["a"], 0.002)
    assert wait is not None and wait > 0
    assert router.choose(["a"], 0.002 + wait, guard=ENFORCE) == "a"     # then the probe
    assert router.snapshot(0.002 + wait)["a"]["breaker"] == "half_open"


async def _warmup_spread(tmp_path, mode: str) -> tuple[float, dict]:
    """Send 40 pings at once from a node warming up (10/s rising to 100/s over 3 s); how far apart
    did they reach the server, and what did the warm-up count?"""
    cfg = RpcConfig(warmup_period=3.0, warmup_rate=100.0)
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()

    def record(payload, peer):
        arrivals.append(loop.time())
        return "ok"

    async with nodes(tmp_path / mode, {"config": cfg}, {"services": {"stamp": record}}) as (a, b):
        a.rpc.protection = protection = Protection(mode)
        a.rpc.retry.protection = protection
        await link(a, b)
        await asyncio.gather(*(a.rpc.request("stamp", timeout=10.0) for _ in range(40)))
        return max(arrivals) - min(arrivals), dict(a.rpc.counters, **protection.counters["rpc.warmup"])


async def test_shadow_mode_changes_no_timing(tmp_path) -> None:
    """The warm-up paces a burst when on; in shadow mode the same burst goes out exactly as with
    protection off (no waits at all) while the warm-up counts what it would have held back."""
    on_spread, on = await _warmup_spread(tmp_path, "on")
    off_spread, off = await _warmup_spread(tmp_path, "off")
    shadow_spread, shadow = await _warmup_spread(tmp_path, "shadow")
    assert on["warmup_waits"] > 0 and on["enforced"] > 0 and on_spread >= 0.5
    assert off["warmup_waits"] == 0 and off["shadowed"] == off["enforced"] == 0
    assert shadow["warmup_waits"] == 0 and shadow["enforced"] == 0 and shadow["shadowed"] > 0
    assert shadow_spread < on_spread / 4 and off_spread < on_spread / 4


@pytest.mark.parametrize("mode", ["on", "shadow"])
async def test_dial_pacing_and_backoff_by_mode(tmp_path, mode: str) -> None:
    """Five addresses due at once with a dial bucket of one token: paced when on; in shadow mode
    all five are dialled at once and the refused ones are due again at once, both counted."""
    from config import load_settings
    from node.identity import NodeIdentity
    from p2p.discovery.base import Candidate
    from p2p.peers import PeerManager
    from tests.harness import closed_port

    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "p2p_host": "127.0.0.1", "p2p_port": 0,
                                          "dial_rate": 0.001, "dial_burst": 1, "target_outbound": 8,
                                          "protection_mode": mode})
    peers = PeerManager(peer_config(settings), NodeIdentity.generate(), verify=NodeIdentity.verify,
                        node_id_for=NodeIdentity.node_id_for)
    for _ in range(5):
        peers.add_candidate(Candidate("127.0.0.1", closed_port(), "bootstrap"))
    peers._dial_due()
    started = len(peers._dial_tasks)
    await asyncio.gather(*list(peers._dial_tasks))
    counters = peers.protection.counters
    if mode == "on":
        assert started == 1 and counters["dial.rate"]["enforced"] >= 1
        assert counters["dial.backoff"] == {"enforced": 0, "shadowed": 0}
    else:
        assert started == 5 and counters["dial.rate"] == {"enforced": 0, "shadowed": 4}
        assert counters["dial.backoff"]["shadowed"] == 5
        assert len(peers.book.due()) == 5          # no backoff applied: all due again now
    await peers.transport.close()
