"""Inbound caps and the eviction policy (p2p/admission.py) and the failure log's rate limit."""
from __future__ import annotations

import logging

from p2p.admission import Candidate, EvictionPolicy, InboundLimits, host_cap_refusal, is_loopback, netgroup
from p2p.failure_log import FailureLog, InternalErrors


def test_netgroups():
    assert netgroup("203.0.113.7") == netgroup("203.0.113.250") == "203.0.113.0/24"
    assert netgroup("2001:db8:1:2::5") == netgroup("2001:db8:1:ffff::1") == "2001:db8:1::/48"
    assert netgroup("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert netgroup("127.0.0.1") == netgroup("127.0.0.9") == "loopback/127.0.0.0/24" != netgroup("127.5.5.5")
    assert netgroup("::1") == "loopback" and all(is_loopback(h) for h in ("127.0.0.1", "127.5.5.5", "::1"))
    assert not is_loopback("203.0.113.7")


def test_host_caps_and_the_loopback_exemption():
    limits = InboundLimits(max_peers=50, max_inbound=42, per_ip=2, per_subnet=3)
    assert host_cap_refusal(limits, "198.51.100.1", ["198.51.100.1"]) is None
    assert host_cap_refusal(limits, "198.51.100.1", ["198.51.100.1"] * 2) == "too_many_from_ip"
    assert host_cap_refusal(limits, "198.51.100.9", ["198.51.100.1", "198.51.100.2", "198.51.100.3"]) \
        == "too_many_from_subnet"
    assert host_cap_refusal(limits, "127.0.0.1", ["127.0.0.1"] * 40) is None
    strict = InboundLimits(max_peers=50, max_inbound=42, per_ip=2, per_subnet=3, limit_loopback=True)
    assert host_cap_refusal(strict, "127.0.0.1", ["127.0.0.1"] * 2) == "too_many_from_ip"


def test_eviction_protects_fast_and_long_lived_peers_and_hits_the_crowded_netgroup():
    policy = EvictionPolicy(secret=b"k" * 16)
    honest = [Candidate(f"h{i}", f"198.51.{i}.1", opened_at=float(i), rtt=0.001) for i in range(6)]
    flood = [Candidate(f"f{i}", f"203.0.113.{i}", opened_at=1000.0 + i, rtt=None) for i in range(30)]
    chosen = policy.choose(honest + flood)
    assert chosen is not None and chosen.key == "f29"  # the youngest of the most crowded /24
    for _ in range(20):  # evicting again and again never reaches an honest peer
        pool = [c for c in honest + flood if c is not chosen]
        flood = [c for c in flood if c is not chosen]
        chosen = policy.choose(pool)
        assert chosen is None or (isinstance(chosen.key, str) and chosen.key.startswith("f"))
    assert policy.choose(honest) is None  # few peers, all protected


def test_failure_log_logs_once_per_address_then_counts(caplog):
    log = FailureLog(logging.getLogger("test.failures"), interval=60.0)
    with caplog.at_level(logging.INFO, "test.failures"):
        for _ in range(5):
            log.record("198.51.100.7:7946", "connection_refused", what="dial")
        log.record("198.51.100.8:7946", "network_mismatch", "theirs 'x'", what="dial")
    messages = [r for r in caplog.records if r.name == "test.failures"]
    assert len(messages) == 2
    assert messages[0].levelno == logging.INFO and "198.51.100.7:7946" in messages[0].getMessage()
    assert messages[1].levelno == logging.WARNING
    last, last_for = log.last, log.last_for("198.51.100.7:7946")
    assert last is not None and last_for is not None
    assert last["reason"] == "network_mismatch" and last_for["what"] == "dial"


def test_internal_errors_log_a_traceback_once(caplog):
    errors = InternalErrors(logging.getLogger("test.internal"))
    with caplog.at_level(logging.ERROR, "test.internal"):
        for _ in range(3):
            try:
                raise KeyError("x")
            except KeyError as exc:
                errors.report("router.subscriber.note", exc)
    records = [r for r in caplog.records if r.name == "test.internal"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert errors.counts == {"router.subscriber.note:KeyError": 3}
