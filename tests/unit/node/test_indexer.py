"""The history indexer's store and follower against a fake node: pages written whole with their cursor, a page
read twice never written twice, a cursor the node forgot resumed from block time (a gap said aloud), candles."""
from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from node.indexer import PAGE, CursorGone, HistoryStore, sqlite_path, sync_market


def trade(n: int, price: str = "100.00", qty: str = "1.0000") -> dict[str, object]:
    return {"id": f"t{n}", "price": price, "qty": qty, "maker_order_id": f"m{n}", "taker_order_id": f"k{n}",
            "taker_side": "buy" if n % 2 else "sell", "maker_account": "a" * 64, "taker_account": "b" * 64,
            "height": n, "time_ms": 1_000 * n}


class FakeNode:
    """Serves `trades` as the node's /trades pages do; forgets the first `forgotten` of them."""

    def __init__(self, trades: list[dict[str, object]]) -> None:
        self.trades = trades
        self.forgotten = 0
        self.asked: list[tuple[int, str | None]] = []

    def markets(self) -> list[str]:
        return ["BTC-USD"]

    def page(self, market: str, start_ms: int, cursor: str | None) -> tuple[list[dict[str, object]], str | None]:
        self.asked.append((start_ms, cursor))
        kept = self.trades[self.forgotten:]
        begin = 0
        if cursor is not None:
            ids = [t["id"] for t in kept]
            if cursor not in ids:
                raise CursorGone(cursor)
            begin = ids.index(cursor) + 1
        chosen = [t for t in kept[begin:] if int(t["time_ms"]) >= start_ms][:PAGE]  # type: ignore[call-overload]
        return chosen, None


@pytest.fixture
def store(tmp_path):
    opened = HistoryStore(tmp_path / "history.sqlite")
    yield opened
    opened.close()


def test_pages_are_copied_once_and_resumed_after_the_last_committed(store, tmp_path):
    node = FakeNode([trade(n) for n in range(1, PAGE + 251)])
    assert sync_market(store, node, "BTC-USD") == PAGE + 250
    assert node.asked[1] == (1_000 * PAGE, f"t{PAGE}")                  # the second page after the first's last
    node.trades += [trade(n) for n in range(PAGE + 251, PAGE + 261)]
    assert sync_market(store, node, "BTC-USD") == 10
    assert store.add_page("BTC-USD", node.trades[:20]) == 0             # a page read twice writes nothing
    db = sqlite3.connect(tmp_path / "history.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM trades").fetchone() == (PAGE + 260, PAGE + 260)
    assert db.execute("SELECT COUNT(*) FROM fills").fetchone() == (2 * (PAGE + 260),)
    assert [t["id"] for t in store.trades("BTC-USD")] == [t["id"] for t in node.trades]
    assert [(f["role"], f["side"]) for f in store.fills("a" * 64)[:2]] == [("maker", "sell"), ("maker", "buy")]


def test_a_failed_page_leaves_nothing_and_its_cursor_where_it_was(store):
    store.add_page("BTC-USD", [trade(1), trade(2)])
    with pytest.raises(sqlite3.IntegrityError):
        store.add_page("BTC-USD", [trade(3), {**trade(4), "price": None}])
    assert [t["id"] for t in store.trades("BTC-USD")] == ["t1", "t2"] and store.cursor("BTC-USD") == ("t2", 2_000)


def test_a_cursor_the_node_forgot_resumes_from_its_block_time_and_says_so(store, caplog):
    node = FakeNode([trade(n) for n in range(1, 11)])
    sync_market(store, node, "BTC-USD")
    node.trades += [trade(n) for n in range(11, 21)]
    node.forgotten = 12                                               # t10 and t11, t12 left the node's window
    assert sync_market(store, node, "BTC-USD") == 8
    assert "gap" in caplog.text and [t["id"] for t in store.trades("BTC-USD")][-1] == "t20"


def test_candles_come_from_the_stored_trades(store):
    store.add_page("BTC-USD", [trade(1, "100.00", "1.0000"), trade(2, "102.00", "0.5000"), trade(61, "99.00")])
    candles = store.candles("BTC-USD", 60_000)
    assert [(c["t"], c["open"], c["high"], c["low"], c["close"], c["volume"], c["trades"]) for c in candles] == [
        (0, Decimal("100"), Decimal("102"), Decimal("100"), Decimal("102"), Decimal("1.5"), 2),
        (60_000, Decimal("99"), Decimal("99"), Decimal("99"), Decimal("99"), Decimal("1"), 1)]
    assert candles[0]["quote_volume"] == Decimal("151")


def test_only_sqlite_urls_are_taken():
    assert str(sqlite_path("sqlite:////tmp/x.db")) == "/tmp/x.db" and str(sqlite_path("sqlite:///x.db")) == "x.db"
    assert str(sqlite_path("x.db")) == "x.db"
    with pytest.raises(ValueError):
        sqlite_path("postgresql://host/db")
