"""Where pages may dial a node: its endpoint as linked peers announce it (hello and heartbeat field `browser`)
and as its signed DHT record lists it (a services entry `webtransport:<port><path>#<sha256, base64url>,...`,
which the DHT neither provides nor publishes under: p2p/dht/records.py `provided`)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field

from p2p.dht.records import ENDPOINT_PREFIX, MAX_NAME, NodeRecord

MAX_PATH = 64
MAX_CERTS = 2


@dataclass(slots=True)
class Endpoint:
    """Where a linked peer said pages may dial it."""
    host: str
    port: int
    path: str
    certs: list[tuple[str, int]] = field(default_factory=list)      # (sha256 hex, not_after ms)


def url_of(host: str, port: int, path: str) -> str:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return f"https://{host}:{port}{path}"
    return f"https://[{literal}]:{port}{path}" if literal.version == 6 else f"https://{host}:{port}{path}"


def parse_endpoint(value: object, host: str) -> Endpoint | None:
    """A peer's `browser` field (port, path, [[hash hex, not_after ms], ...]), or None when malformed."""
    if type(value) is not list or len(value) != 3:
        return None
    port, path, certs = value
    if type(port) is not int or not 0 < port < 65536 or type(path) is not str or not path.startswith("/") \
            or len(path) > MAX_PATH or type(certs) is not list or not 0 < len(certs) <= MAX_CERTS:
        return None
    parsed: list[tuple[str, int]] = []
    for cert in certs:
        if type(cert) is not list or len(cert) != 2 or type(cert[0]) is not str or len(cert[0]) != 64 \
                or type(cert[1]) is not int or cert[1] < 0:
            return None
        try:
            bytes.fromhex(cert[0])
        except ValueError:
            return None
        parsed.append((cert[0], cert[1]))
    return Endpoint(host, port, path, parsed)


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dht_entry(port: int, path: str, hashes: list[bytes]) -> str | None:
    """The services entry naming our endpoint: as many hashes as fit in a service name (the served one first)."""
    for count in range(len(hashes), 0, -1):
        entry = f"{ENDPOINT_PREFIX}{port}{path}#{','.join(_b64(h) for h in hashes[:count])}"
        if len(entry) <= MAX_NAME:
            return entry
    return None


def endpoint_of_record(record: NodeRecord) -> Endpoint | None:
    """The endpoint a (checked) DHT record names, at the first address it lists, or None."""
    entry = next((s for s in record.services if s.startswith(ENDPOINT_PREFIX)), None)
    if entry is None or not record.addresses:
        return None
    where, _, hashes = entry[len(ENDPOINT_PREFIX):].partition("#")
    port_text, slash, path = where.partition("/")
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or not slash \
            or not 0 < int(port_text) < 65536 or len(path) >= MAX_PATH:
        return None
    certs: list[tuple[str, int]] = []
    for text in hashes.split(",")[:MAX_CERTS]:
        try:
            digest = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(digest) != 32:
            return None
        certs.append((digest.hex(), 0))
    if not certs:
        return None
    return Endpoint(record.addresses[0][0], int(port_text), "/" + path, certs)
