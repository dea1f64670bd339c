import math
import random

import pytest

from p2p.rpc.hints import DEGRADED, HEALTHY, HintBook, HintEmitter, parse_hint
from p2p.rpc.router import AdaptiveRouter, RouterConfig


def hint(subject="p", status=DEGRADED, origin="o1", at=0.0):
    return parse_hint({"subject": subject, "status": status, "latency_ms": 120.0, "error_rate": 0.1}, origin, at)


def test_parse_rejects_malformed():
    assert parse_hint({"subject": "p", "status": "BROKEN"}, "o", 0) is None
    assert parse_hint({"subject": "", "status": DEGRADED}, "o", 0) is None
    assert parse_hint({"subject": "p", "status": DEGRADED, "error_rate": 3}, "o", 0) is None
    assert parse_hint({"subject": "p", "status": DEGRADED, "latency_ms": float("nan")}, "o", 0) is None
    assert parse_hint({"subject": "p", "status": HEALTHY}, "o", 0) is not None


def test_multiplier_decays_and_expires_with_ttl():
    book = HintBook(ttl=60.0, per_origin=0.5)
    assert book.receive(hint(at=0.0))
    assert book.multiplier("p", 0.0) == pytest.approx(1.5)
    assert book.multiplier("p", 20.0) == pytest.approx(1 + 0.5 * math.exp(-1.0))
    assert book.multiplier("p", 60.0) == 1.0
    assert book.summary("p", 60.0) is None and len(book) == 0


def test_multiplier_is_capped_at_2x_whatever_the_number_of_origins():
    book = HintBook(per_origin=0.5)
    for i in range(10):
        book.receive(hint(origin=f"o{i}"))
    assert book.multiplier("p", 0.0) == 2.0
    summary = book.summary("p", 0.0)
    assert summary is not None and summary["status"] == DEGRADED


def test_dedup_and_rate_limit_per_origin_subject():
    book = HintBook(min_interval=5.0, min_change_interval=1.0)
    assert book.receive(hint(at=0.0))
    assert not book.receive(hint(at=1.0))                  # same status too soon
    assert book.receive(hint(origin="o2", at=1.0))         # another origin is separate
    assert not book.receive(hint(status=HEALTHY, at=0.5))  # flip too soon
    assert book.receive(hint(status=HEALTHY, at=1.5))      # HEALTHY replaces o1's DEGRADED
    assert book.multiplier("p", 1.5) == pytest.approx(1.5, rel=0.01)
    assert book.receive(hint(at=6.6))
    assert book.dropped == 2


def test_origins_per_subject_are_bounded():
    book = HintBook(max_origins=3, max_subjects=2)
    for i in range(5):
        book.receive(hint(origin=f"o{i}", at=float(i)))
    assert len(book) == 3
    book.receive(hint(subject="q"))
    book.receive(hint(subject="r", at=10.0))
    assert len(book._hints) == 2


def test_router_applies_hints_only_to_known_peers_without_fresh_data():
    r = AdaptiveRouter(RouterConfig(fresh_samples=5, fresh_window=2.0), rng=random.Random(0))
    assert not r.on_hint({"subject": "ghost", "status": DEGRADED}, "o1", 0.0)   # never creates peers
    assert "ghost" not in r
    r.on_start("p", 0.0)
    r.on_success("p", 0.01, 0.01)
    r.on_start("q", 0.0)
    r.on_success("q", 0.01, 0.01)
    assert r.on_hint({"subject": "p", "status": DEGRADED}, "o1", 0.1)
    assert r.on_hint({"subject": "p", "status": DEGRADED}, "o2", 0.1)
    assert r.hint_multiplier("p", 0.2) == pytest.approx(2.0, rel=0.01)
    assert r.cost("p", 0.2) == pytest.approx(2 * r.cost("q", 0.2), rel=0.02)
    hint = r.snapshot(0.2)["p"]["hint"]
    assert hint is not None and hint["status"] == DEGRADED
    for i in range(6):                                     # fresh local data: hint ignored
        r.on_start("p", 0.3)
        r.on_success("p", 0.01, 0.3 + i * 0.01)
    assert r.hint_multiplier("p", 0.4) == 1.0
    assert not r.on_hint({"subject": "p", "status": DEGRADED}, "p", 0.4)       # self-accusation ignored
    r.forget("p")
    assert r.hints.summary("p", 0.5) is None


def test_emitter_hysteresis_and_rate_limit():
    e = HintEmitter(degrade_factor=3.0, recover_factor=1.5, min_interval=2.0, refresh_interval=20.0)
    assert e.observe("p", 10.0, 0.0, 0.0, baseline_ms=10.0) is None          # healthy: silence
    out = e.observe("p", 40.0, 0.0, 1.0, baseline_ms=10.0)
    assert out == {"subject": "p", "status": DEGRADED, "latency_ms": 40.0, "error_rate": 0.0}
    assert e.observe("p", 20.0, 0.0, 5.0, baseline_ms=10.0) is None          # between thresholds: stays
    e2 = HintEmitter(min_interval=2.0)
    e2.observe("p", 100.0, 0.0, 0.0, baseline_ms=10.0)
    assert e2.observe("p", 10.0, 0.0, 1.0, baseline_ms=10.0) is None         # recovered but rate-limited
    out = e2.observe("p", 10.0, 0.0, 2.1, baseline_ms=10.0)
    assert out is not None and out["status"] == HEALTHY
    out = e2.observe("p", 10.0, 0.5, 4.5, baseline_ms=10.0)
    assert out is not None and out["status"] == DEGRADED                             # error rate
    assert e2.observe("p", 10.0, 0.5, 10.0, baseline_ms=10.0) is None
    out = e2.observe("p", 10.0, 0.5, 25.0, baseline_ms=10.0)
    assert out is not None and out["status"] == DEGRADED                             # refresh


def test_router_emit_hints_reports_a_slow_peer():
    r = AdaptiveRouter(RouterConfig(fresh_samples=3), rng=random.Random(0))
    now = 0.0
    for _i in range(10):
        for p, lat in (("a", 0.01), ("b", 0.01), ("c", 0.2)):
            r.on_start(p, now)
            r.on_success(p, lat, now + 0.001)
        now += 0.01
    out = r.emit_hints(HintEmitter(), now)
    assert [h["subject"] for h in out] == ["c"] and out[0]["status"] == DEGRADED


def test_the_router_keeps_the_hint_book_it_is_given():
    """An empty HintBook is falsy (it has a length): the router must still use the configured one."""
    book = HintBook(ttl=5.0)
    assert AdaptiveRouter(hint_book=book).hints is book
