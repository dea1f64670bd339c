"""The WebTransport certificate a browser accepts by hash, and its rotation with an overlap."""
from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.browser.binding import proof_message
from node.browser import cert_store
from node.browser.certs import (DAY, MAX_VALIDITY, OVERLAP, SWITCH_BEFORE, VALIDITY, CertRotation, make_certificate,
                                usable_kept)

NOW = 1_800_000_000.0


def test_a_certificate_is_ecdsa_p256_valid_under_14_days_with_its_hosts() -> None:
    cert = make_certificate(NOW, hosts=("127.0.0.1", "node.example"))
    parsed = x509.load_der_x509_certificate(cert.der)
    key = parsed.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = (parsed.not_valid_after_utc - parsed.not_valid_before_utc).total_seconds()
    assert lifetime == VALIDITY < MAX_VALIDITY
    assert parsed.not_valid_before_utc.timestamp() < NOW < parsed.not_valid_after_utc.timestamp()
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["node.example"]
    assert cert.sha256 == hashlib.sha256(cert.der).digest()
    assert make_certificate(NOW).sha256 != cert.sha256, "a fresh key each time"


def test_rotation_publishes_the_next_hash_ahead_then_switches_then_drops_the_old() -> None:
    rotation = CertRotation(NOW, hosts=("127.0.0.1",))
    first = rotation.current
    assert rotation.published() == [first]
    announce = first.not_after - SWITCH_BEFORE - OVERLAP
    assert rotation.due_in(NOW) == pytest.approx(announce - NOW)
    assert not rotation.tick(announce - 1)
    assert rotation.tick(announce)                                  # the next is made and published early
    nxt = rotation.next
    assert nxt is not None and rotation.published() == [first, nxt] and rotation.current is first
    assert not rotation.tick(announce + DAY)
    assert rotation.tick(first.not_after - SWITCH_BEFORE)            # served once the current has 2 days left
    assert rotation.current is nxt and rotation.published() == [nxt] and rotation.rotations == 1
    assert nxt.valid_at(first.not_after)                            # a page holding [first, next] still gets in


def test_a_clock_jump_past_the_end_starts_again_at_once() -> None:
    rotation = CertRotation(NOW, hosts=("127.0.0.1",))
    later = NOW + 30 * DAY
    assert rotation.tick(later)
    assert rotation.current.valid_at(later)


def test_impossible_rotations_are_refused() -> None:
    with pytest.raises(ValueError):
        CertRotation(NOW, hosts=("127.0.0.1",), validity=MAX_VALIDITY + 1)
    with pytest.raises(ValueError):
        CertRotation(NOW, hosts=("127.0.0.1",), validity=5 * DAY, overlap=4 * DAY, switch_before=DAY)


def test_the_proof_covers_a_domain_the_certificate_hash_and_the_nonce() -> None:
    message = proof_message(b"\x01" * 32, b"\x02" * 32)
    assert message.startswith(b"exchange-node/browser-session/1\n") and message.endswith(b"\x01" * 32 + b"\x02" * 32)
    with pytest.raises(ValueError):
        proof_message(b"\x01" * 31, b"\x02" * 32)


def test_a_restart_serves_the_kept_certificates_and_renews_them_if_their_time_came(tmp_path) -> None:
    hosts = ("127.0.0.1",)
    before = CertRotation(NOW, hosts=hosts)
    before.tick(before.current.not_after - SWITCH_BEFORE - OVERLAP)          # mid-renewal: two published
    path = tmp_path / cert_store.FILE_NAME
    cert_store.save(path, before.published())
    assert path.stat().st_mode & 0o777 == 0o600
    kept = cert_store.load(path)
    assert [c.sha256 for c in kept] == [c.sha256 for c in before.published()] and kept[0].hosts == hosts
    later = before.current.not_after - SWITCH_BEFORE - OVERLAP + 60
    after = CertRotation(later, hosts=hosts, kept=usable_kept(kept, hosts, later))
    assert [c.sha256 for c in after.published()] == [c.sha256 for c in before.published()]
    switched = CertRotation(before.current.not_after - 60, hosts=hosts,
                            kept=usable_kept(kept, hosts, before.current.not_after - 60))
    assert switched.current.sha256 == kept[1].sha256 and switched.published() == [switched.current]


def test_kept_certificates_of_other_hosts_expired_or_unreadable_are_not_served_again(tmp_path) -> None:
    cert = make_certificate(NOW, hosts=("127.0.0.1",))
    assert usable_kept([cert], ("10.0.0.1",), NOW) == []
    assert usable_kept([cert], ("127.0.0.1",), cert.not_after + 1) == []
    path = tmp_path / cert_store.FILE_NAME
    path.write_text("{not json")
    assert cert_store.load(path) == []
    assert cert_store.load(tmp_path / "absent.json") == []
