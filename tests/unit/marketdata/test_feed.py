"""MarketFeed and StreamSession against a dict source and a recording transport: snapshots, one
coalesced update per subscription per batch, sequence numbers, resync, tickers, and slow clients."""
from __future__ import annotations

import pytest

from node.marketdata.feed import MarketFeed, SubscribeError
from node.marketdata.session import CLOSE_SLOW_CONSUMER, StreamSession
from tests.stream_client import LocalBook
from tests.unit.marketdata.fakes import MARKETS, DictSource, RecordingTransport, trade


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    source = DictSource()
    source.books["BTC-USD"]["bids"] = {10000: 5, 9990: 7}
    source.books["BTC-USD"]["asks"] = {10010: 3}
    source.trades["BTC-USD"] = [trade(1, 10005, 2)]
    clock = Clock()
    feed = MarketFeed(list(MARKETS), source, clock=clock)
    return source, feed, clock


def client(max_buffer: int = 1 << 20) -> tuple[StreamSession, RecordingTransport]:
    transport = RecordingTransport()
    return StreamSession(transport, max_buffer), transport


def delivered(session: StreamSession, transport: RecordingTransport) -> list[dict]:
    session.flush()
    return transport.messages()


async def test_book_snapshot_then_one_update_per_batch(world):
    source, feed, _ = world
    session, transport = client()
    sub = feed.subscribe_book(session, "BTC-USD", 10)
    feed.book_snapshot(sub)
    for price, lots in ((10000, 6), (10010, 0), (10020, 1), (10000, 8)):   # one event-loop pass
        feed.publish_level("BTC-USD", "bids" if price == 10000 else "asks", price, lots)
    feed.flush()
    snapshot, update = delivered(session, transport)
    assert snapshot == {"chan": sub.chan, "seq": 0, "type": "snapshot", "bids": [["100.00", "0.0005"],
                        ["99.90", "0.0007"]], "asks": [["100.10", "0.0003"]], "checksum": snapshot["checksum"]}
    assert update["seq"] == 1 and update["bids"] == [["100.00", "0.0008"]]
    assert sorted(update["asks"]) == [["100.10", "0"], ["100.20", "0.0001"]]
    book = LocalBook(10)
    book.apply(snapshot)
    book.apply(update)
    assert book.levels("asks") == [["100.20", "0.0001"]]


async def test_one_encoding_per_channel_and_each_subscriber_its_own_seq(world):
    _, feed, _ = world
    (a, ta), (b, tb) = client(), client()
    sub_a = feed.subscribe_trades(a, "BTC-USD")
    feed.trades_snapshot(sub_a)
    feed.publish_trade("BTC-USD", trade(2, 10010, 1))
    feed.flush()
    sub_b = feed.subscribe_trades(b, "BTC-USD")
    feed.trades_snapshot(sub_b)
    feed.publish_trade("BTC-USD", trade(3, 10020, 4, "sell"))
    feed.flush()
    got_a, got_b = delivered(a, ta), delivered(b, tb)
    assert [m["seq"] for m in got_a] == [0, 1, 2] and [m["seq"] for m in got_b] == [0, 1]
    assert [t["id"] for t in got_a[0]["trades"]] == ["t1"]
    assert [t["id"] for t in got_b[0]["trades"]] == ["t1", "t2"]          # the snapshot is what was flushed
    assert got_a[2]["trades"] == got_b[1]["trades"]
    assert got_b[1]["trades"][0] == {"id": "t3", "market": "BTC-USD", "price": "100.20", "qty": "0.0004",
                                     "taker_side": "sell", "maker_order_id": "m3", "taker_order_id": "k3",
                                     "buy_order_id": "b3", "sell_order_id": "s3", "ts": 1_700_000_000.0}


async def test_subscriber_joining_mid_batch_sees_consistent_state(world):
    _, feed, _ = world
    first, t1 = client()
    feed.book_snapshot(feed.subscribe_book(first, "BTC-USD", 1))
    feed.publish_level("BTC-USD", "bids", 10005, 2)                 # published, not flushed yet
    late, t2 = client()
    feed.book_snapshot(feed.subscribe_book(late, "BTC-USD", 1))
    feed.flush()
    for session, transport in ((first, t1), (late, t2)):
        book = LocalBook(1)
        for message in delivered(session, transport):
            book.apply(message)
        assert book.levels("bids") == [["100.05", "0.0002"]]


async def test_ticker_tracks_best_prices_and_24h_trades(world):
    _, feed, clock = world
    session, transport = client()
    feed.ticker_snapshot(feed.subscribe_ticker(session, "BTC-USD"))
    feed.publish_trade("BTC-USD", trade(2, 10020, 3))
    feed.flush()
    clock.now += 25 * 3600                                          # the day-old trade leaves the window
    feed.publish_trade("BTC-USD", trade(3, 9000, 1, "sell"))
    feed.publish_level("BTC-USD", "bids", 10000, 0)
    feed.flush()
    snapshot, first, second = (m["ticker"] for m in delivered(session, transport))
    assert snapshot["bid"] == "100.00" and snapshot["ask"] == "100.10" and snapshot["trades_24h"] == 0
    assert first["last_price"] == "100.20" and first["volume_24h"] == "0.0003" and first["high_24h"] == "100.20"
    assert second == {**second, "bid": "99.90", "bid_qty": "0.0007", "last_price": "90.00", "last_taker_side": "sell",
                      "volume_24h": "0.0001", "trades_24h": 1, "high_24h": "90.00", "low_24h": "90.00"}


async def test_resync_sends_the_difference_as_updates(world):
    source, feed, _ = world
    session, transport = client()
    feed.book_snapshot(feed.subscribe_book(session, "BTC-USD", 25))
    source.books["BTC-USD"]["bids"] = {9990: 7, 9980: 1}
    feed.resync("BTC-USD")
    feed.flush()
    book = LocalBook(25)
    for message in delivered(session, transport):
        book.apply(message)
    assert book.levels("bids") == [["99.90", "0.0007"], ["99.80", "0.0001"]]


async def test_orders_need_auth_and_carry_the_latest_state_per_batch(world):
    source, feed, _ = world
    session, transport = client()
    with pytest.raises(SubscribeError) as refused:
        feed.subscribe_orders(session)
    assert refused.value.code == "auth_required"
    session.authenticated = True
    source.orders = [{"id": "o1", "status": "open"}]
    feed.orders_snapshot(feed.subscribe_orders(session))
    feed.publish_orders([{"id": "o1", "status": "partially_filled"}, {"id": "o1", "status": "filled"}])
    feed.flush()
    snapshot, update = delivered(session, transport)
    assert snapshot["orders"] == [{"id": "o1", "status": "open"}]
    assert update["orders"] == [{"id": "o1", "status": "filled"}]


@pytest.mark.parametrize("market, depth, code", [("XRP-USD", 25, "unknown_market"), (["BTC-USD"], 25, "unknown_market"),
                                                 ("BTC-USD", 7, "invalid_depth"), ("BTC-USD", "25", "invalid_depth"),
                                                 ("BTC-USD", True, "invalid_depth")])
async def test_bad_subscriptions_are_refused_with_a_code(world, market, depth, code):
    _, feed, _ = world
    with pytest.raises(SubscribeError) as refused:
        feed.subscribe_book(client()[0], market, depth)
    assert refused.value.code == code


async def test_a_view_lives_only_while_someone_holds_it(world):
    _, feed, _ = world
    session, _ = client()
    sub = feed.subscribe_book(session, "BTC-USD", 100)
    assert 100 in feed.markets["BTC-USD"].views
    feed.unsubscribe(sub)
    assert 100 not in feed.markets["BTC-USD"].views and feed.subscriber_counts()["book"] == 0


async def test_frames_of_one_pass_go_out_in_one_write():
    session, transport = client()
    for n in range(5):
        session.send(b'{"n":%d}' % n)
    session.flush()
    assert len(transport.writes) == 1 and [m["n"] for m in transport.messages()] == [0, 1, 2, 3, 4]


async def test_a_client_that_does_not_read_is_cut_off_and_its_queue_dropped():
    closed = []
    transport = RecordingTransport()
    session = StreamSession(transport, max_buffer=1000, on_closed=lambda s, reason: closed.append(reason))
    session.send(b'{"x":"' + b"a" * 3000 + b'"}')  # a batch larger than the bound goes out to a client that reads
    session.flush()
    transport.backlog = 1000                      # the client has read all but the bound: still in
    session.send(b'{"x":"' + b"b" * 400 + b'"}')
    session.flush()
    assert closed == [] and len(transport.writes) == 2
    transport.backlog = 1001                      # beyond the bound when the next batch is due
    session.send(b'{"x":"' + b"c" * 400 + b'"}')
    session.flush()
    assert closed == ["slow_consumer"] and session.closing == "slow_consumer"
    assert len(transport.writes) == 2             # the third message was never written
    session.send(b'{"late":1}')                   # nothing is queued once closing
    assert session._pending == []
    assert CLOSE_SLOW_CONSUMER == 4008
