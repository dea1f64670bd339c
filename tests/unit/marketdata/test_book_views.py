"""Depth views: what subscribers apply always leaves them holding exactly the top N levels, with the
checksum a client following docs/api.md computes."""
from __future__ import annotations

import zlib

from hypothesis import given, settings, strategies as st

from node.marketdata.book import BookMirror, DepthView, book_checksum
from tests.stream_client import LocalBook


def fmt(value: int) -> str:
    return f"{value / 100:.2f}"


def message(view: DepthView, seq: int, changes: dict | None = None) -> dict:
    body = changes if changes is not None else view.snapshot()
    return {"seq": seq, "type": "update" if changes is not None else "snapshot", **body, "checksum": view.checksum()}


operations = st.lists(st.tuples(st.sampled_from(["bids", "asks"]), st.integers(1, 60), st.integers(0, 5)),
                      max_size=60)


@settings(max_examples=300, deadline=None)
@given(start=operations, batches=st.lists(operations, max_size=12), depth=st.sampled_from([1, 3, 10]))
def test_snapshot_plus_updates_is_always_the_top_n(start, batches, depth):
    mirror = BookMirror()
    for side, price, lots in start:
        mirror.set_level(side, price * 10 + (0 if side == "bids" else 700), lots)
    view = DepthView(mirror, depth, fmt, str)
    client = LocalBook(depth)
    client.apply(message(view, 0))
    seq = 0
    for batch in batches:
        touched: dict[str, set[int]] = {"bids": set(), "asks": set()}
        for side, price, lots in batch:
            price = price * 10 + (0 if side == "bids" else 700)
            if mirror.set_level(side, price, lots):
                touched[side].add(price)
        changes = view.refresh(mirror, touched)
        if changes is not None:
            seq += 1
            client.apply(message(view, seq, changes))       # checks seq and checksum too
        for side in ("bids", "asks"):
            assert client.levels(side) == [[fmt(p), str(q)] for p, q in mirror.top(side, depth)]


def test_a_change_below_a_full_view_sends_nothing_and_a_removal_pulls_the_next_level_in():
    mirror = BookMirror()
    for price in (100, 99, 98):
        mirror.set_level("bids", price, 1)
    view = DepthView(mirror, 2, str, str)
    mirror.set_level("bids", 97, 5)
    assert view.refresh(mirror, {"bids": {97}, "asks": set()}) is None
    mirror.set_level("bids", 100, 0)
    assert view.refresh(mirror, {"bids": {100}, "asks": set()}) == {"bids": [["98", "1"], ["100", "0"]], "asks": []}


def test_checksum_follows_the_documented_interleaving():
    bids = [["100.00", "1.5"], ["99.50", "2"]]
    asks = [["101.00", "3"]]
    assert book_checksum(bids, asks) == zlib.crc32(b"100.00:1.5:101.00:-3:99.50:2")
    assert book_checksum([], []) == zlib.crc32(b"")
    many = [[str(1000 - i), "1"] for i in range(40)]
    assert book_checksum(many, []) == zlib.crc32(":".join(f"{1000 - i}:1" for i in range(25)).encode())
