"""Where pages may dial a node, as its links announce it and as its DHT record lists it; the DHT neither provides
nor publishes under that entry."""
from __future__ import annotations

import hashlib

from nacl.signing import SigningKey

from node.browser.endpoints import dht_entry, endpoint_of_record, parse_endpoint, url_of
from p2p.dht.records import MAX_NAME, NodeRecord, RecordStore, provided

H1, H2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()


def record(services: tuple[str, ...]) -> NodeRecord:
    key = SigningKey.generate()
    return NodeRecord.create(bytes(key.verify_key), lambda d: key.sign(d).signature,
                             lambda k: hashlib.sha256(k).digest()[:20].hex(), addresses=(("10.0.0.5", 7946, "listen"),),
                             services=services, protocol=1, seq=1, expires_ms=3_600_000)


def test_a_linked_peers_field_is_checked_before_it_is_believed() -> None:
    good = parse_endpoint([7946, "/exchange-node", [[H1.hex(), 5], [H2.hex(), 6]]], "10.0.0.5")
    assert good is not None and good.certs == [(H1.hex(), 5), (H2.hex(), 6)] and good.host == "10.0.0.5"
    for bad in (None, [0, "/p", [[H1.hex(), 1]]], [1, "p", [[H1.hex(), 1]]], [1, "/p", []],
                [1, "/p", [[H1.hex(), 1]] * 3], [1, "/p", [["zz" * 32, 1]]], [1, "/p", [[H1.hex(), -1]]],
                [1, "/" + "p" * 80, [[H1.hex(), 1]]], [1, "/p", [[H1.hex()[:10], 1]]]):
        assert parse_endpoint(bad, "10.0.0.5") is None, bad


def test_the_dht_entry_round_trips_and_fits_a_service_name() -> None:
    entry = dht_entry(7946, "/exchange-node", [H1, H2])
    assert entry is not None and len(entry) <= MAX_NAME
    endpoint = endpoint_of_record(record(("exchange-node", entry)))
    assert endpoint is not None and (endpoint.host, endpoint.port, endpoint.path) == ("10.0.0.5", 7946, "/exchange-node")
    assert [h for h, _ in endpoint.certs] == [H1.hex(), H2.hex()]
    long_path = "/" + "p" * 60
    shorter = dht_entry(7946, long_path, [H1, H2])
    assert shorter is not None and len(shorter) <= MAX_NAME and shorter.count(",") == 0, "the served hash first"
    for bad in ("webtransport:x/p#" + "A" * 43, "webtransport:7946/p#zz", "webtransport:7946#" + "A" * 43):
        assert endpoint_of_record(record(("exchange-node", bad))) is None, bad


def test_the_dht_keeps_no_provider_entry_for_an_endpoint() -> None:
    entry = dht_entry(7946, "/exchange-node", [H1])
    assert entry is not None
    assert provided(("exchange-node", entry)) == ("exchange-node",)
    store = RecordStore()
    assert store.put(record(("exchange-node", entry)), "a" * 40, 1, "10.0.0.9") is None
    assert set(store.providers) == {"exchange-node"}


def test_urls_bracket_ipv6() -> None:
    assert url_of("::1", 5, "/p") == "https://[::1]:5/p"
    assert url_of("10.0.0.1", 5, "/p") == "https://10.0.0.1:5/p"
