"""The WebTransport certificate and its rotation (sans-I/O: time is an argument).

A browser accepts a self-signed certificate given by its SHA-256 only if it is ECDSA P-256 and valid for at most
14 days, so the node makes its own and renews it: the next certificate is made `overlap` before the current one
is due to be replaced, and both hashes are published from then on, so a page that learnt the record before the
switch still reaches the node after it. The node serves the newer certificate once the older has less than
`switch_before` left.
"""
from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = 86_400.0
MAX_VALIDITY = 14 * DAY          # what Chromium accepts for serverCertificateHashes
VALIDITY = 13 * DAY              # a day short of it: clocks that disagree by hours still accept it
OVERLAP = 4 * DAY                # how long before the switch the next hash is published
SWITCH_BEFORE = 2 * DAY          # the next certificate is served once the current has this little left
BACKDATE = 3600.0                # not_before an hour back: a browser whose clock is a little behind accepts it


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate the endpoint may serve: its DER, PEM chain and key, its hash and validity (epoch s)."""
    der: bytes
    cert_pem: bytes
    key_pem: bytes
    not_before: float
    not_after: float
    hosts: tuple[str, ...] = ()
    sha256: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.der).digest())

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now < self.not_after


def make_certificate(now: float, *, hosts: tuple[str, ...] = ("127.0.0.1",), validity: float = VALIDITY,
                     not_before: float | None = None) -> Certificate:
    """A fresh ECDSA P-256 key and a self-signed certificate for `hosts` (IP literals or names)."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exchange-node")])
    start = now - BACKDATE if not_before is None else not_before
    end = start + validity
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(start, datetime.timezone.utc))
            .not_valid_after(datetime.datetime.fromtimestamp(end, datetime.timezone.utc))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    return Certificate(der=cert.public_bytes(serialization.Encoding.DER),
                       cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                       key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()),
                       not_before=start, not_after=end, hosts=hosts)


class CertRotation:
    """Which certificate to serve and which hashes to publish, renewed ahead of time.

    `tick(now)` makes the next certificate when the current one is within `overlap + switch_before` of its end,
    and serves it once the current one is within `switch_before`; it returns True when what is served or
    published changed (the caller reloads the endpoint and republishes its record)."""

    def __init__(self, now: float, *, hosts: tuple[str, ...], validity: float = VALIDITY, overlap: float = OVERLAP,
                 switch_before: float = SWITCH_BEFORE, kept: list[Certificate] | None = None) -> None:
        if validity > MAX_VALIDITY:
            raise ValueError("a browser refuses a certificate valid for more than 14 days")
        if overlap + switch_before >= validity:
            raise ValueError("the overlap and the switch must fit in the validity")
        self.hosts = hosts
        self.validity = validity
        self.overlap = overlap
        self.switch_before = switch_before
        self.current = make_certificate(now, hosts=hosts, validity=validity) if not kept else kept[0]
        self.next: Certificate | None = kept[1] if kept and len(kept) > 1 else None
        self.rotations = 0
        if kept:                  # what a restart kept: renewed now if its time came while the node was down
            self.tick(now)

    def tick(self, now: float) -> bool:
        changed = False
        if self.next is None and now >= self.current.not_after - self.switch_before - self.overlap:
            self.next = make_certificate(now, hosts=self.hosts, validity=self.validity)
            changed = True
        if self.next is not None and now >= self.current.not_after - self.switch_before:
            self.current, self.next = self.next, None
            self.rotations += 1
            changed = True
        if not self.current.valid_at(now):         # a clock jump (or a machine asleep): start again at once
            self.current, self.next = make_certificate(now, hosts=self.hosts, validity=self.validity), None
            self.rotations += 1
            changed = True
        return changed

    def published(self) -> list[Certificate]:
        """The certificates a page may meet: the served one, then the next while the renewal overlaps."""
        return [self.current] if self.next is None else [self.current, self.next]

    def due_in(self, now: float) -> float:
        """Seconds until `tick` has something to do."""
        if self.next is None:
            return max(0.0, self.current.not_after - self.switch_before - self.overlap - now)
        return max(0.0, self.current.not_after - self.switch_before - now)


def usable_kept(certificates: list[Certificate], hosts: tuple[str, ...], now: float) -> list[Certificate]:
    """The certificates a restarted node may serve again (the served one, then the next): made for the same `hosts`
    and still valid, so pages that learnt their hashes reach the node after a restart. Else none: make new ones."""
    if not certificates or any(c.hosts != hosts or not c.valid_at(now) for c in certificates[:2]):
        return []
    return certificates[:2]
