"""The history indexer on a one-validator chain built here: only what its replay verified is written.

A producer applies blocks of crossing orders and certifies each with the validator's key. The follower replays
them from the genesis: every trade of every block the next certified header vouches for is written once, a
restart writes nothing twice, and a node serving an altered block, a forged certificate or another chain is
refused by name while the next node's blocks are taken. A certified header whose state differs from the replay's
stops the indexer with nothing after it written. The store: candles from the stored trades, SQLite URLs.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import sqlite3
from decimal import Decimal
from typing import Callable

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import NewOrderOp, sign_tx
from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, vote_bytes
from exchange.chain.state.chainstate import ChainState, encode_item
from exchange.chain.types.codec import pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.crypto import SigningKey
from node.indexer import HistoryStore, sqlite_path
from node.indexer_follow import Follower, follow
from node.indexer_replica import Diverged, VerifiedBlock
from node.light.verify import Refused

KEY = SigningKey(hashlib.sha256(b"indexer-validator").digest())
MAKER = SigningKey(hashlib.sha256(b"indexer-maker").digest())
TAKER = SigningKey(hashlib.sha256(b"indexer-taker").digest())
GENESIS = Genesis("indexer-test", 1_000, KEY.public_key, (KEY.public_key,), exchange=ExchangeParams("BTC-USD").to_wire())
Item = dict[str, object]


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def _commit(header: Header, genesis: Genesis = GENESIS) -> Commit:
    return Commit(header.height, 0, header.id,
                  ((0, KEY.sign(vote_bytes(genesis.chain_id, PRECOMMIT, header.height, 0, header.id))),))


def produce(count: int, *, bad_state_at: int | None = None, every_ms: int = 1_000,
            genesis: Genesis = GENESIS) -> tuple[list[Item], list[list[dict]]]:
    """`count` certified blocks, each crossing a sell and a buy (one trade); and each block's trade views."""
    state = ChainState(genesis, ExchangeState(ExchangeParams.from_wire(genesis.exchange), genesis.chain_id))
    items: list[Item] = []
    trades: list[list[dict]] = []
    last: Commit | None = None
    for height in range(1, count + 1):
        time_ms = 10_000 + every_ms * height
        price = f"{100 + height % 5}.00"
        txs = [encode_item(sign_tx(key.sign, key.public_key, genesis.chain_id, f"n{height}", time_ms + 60_000,
                                   [NewOrderOp("BTC-USD", side, "limit", price, "1", None)]))
               for key, side in ((MAKER, "sell"), (TAKER, "buy"))]
        app_hash = b"\x07" * 32 if height == bad_state_at else state.hash
        header = Header(genesis.chain_id, height, time_ms, state.last_block_id, KEY.public_key, app_hash,
                        state.validators.hash, Block.txs_hash(txs), last)
        block = Block(header, txs)
        outcome = state.apply_block(block)
        last = _commit(header, genesis)
        items.append({"height": height, "block": _b64(block.wire()), "commit": _b64(last.wire())})
        trades.append(list(outcome.exchange.trades))  # type: ignore[attr-defined]
    return items, trades


class Node:
    """Serves the produced blocks as `/chain/blocks` does, `PER_ANSWER` at a time, through `lie` when given."""

    PER_ANSWER = 3

    def __init__(self, url: str, items: list[Item], lie: Callable[[Item], Item] | None = None,
                 genesis: Genesis = GENESIS) -> None:
        self.url, self.items, self.lie, self.genesis_doc = url, items, lie, genesis
        self.asked = 0
        self.starts: list[int] = []

    def genesis(self) -> object:
        return {"chain_id": self.genesis_doc.chain_id, "genesis": _b64(self.genesis_doc.wire())}

    def epochs(self) -> object:
        return {"proofs": []}

    def blocks(self, start: int) -> object:
        self.asked += 1
        self.starts.append(start)
        chosen = [dict(item) for item in self.items[start - 1:start - 1 + self.PER_ANSWER]]
        return {"blocks": [self.lie(item) if self.lie else item for item in chosen]}


def altered(item: Item) -> Item:
    """The block's second order bought at another price: its header still names the original transactions."""
    block = unpack(base64.b64decode(str(item["block"])))
    if block[0][1] == 4:
        tx = copy.deepcopy(block[1][1])
        tx[1][4][0][4] = "999.00"
        block[1][1] = tx
    return {**item, "block": _b64(block)}


def forged(item: Item) -> Item:
    height, round_, block_id, sigs = unpack(base64.b64decode(str(item["commit"])))
    if height == 4:
        sigs = [[i, bytes(b ^ 1 for b in s)] for i, s in sigs]
    return {**item, "commit": _b64([height, round_, block_id, sigs])}


@pytest.fixture
def store(tmp_path):
    opened = HistoryStore(tmp_path / "history.sqlite")
    yield opened
    opened.close()


def run(follower: Follower, steps: int) -> None:
    left = [steps]

    def running() -> bool:
        left[0] -= 1
        return left[0] >= 0

    follow(follower, 0.0, running, sleep=lambda _: None)


def written_id(store: HistoryStore, height: int) -> str | None:
    return store.block_id(height)


def written(store: HistoryStore) -> list[str]:
    return [str(t["id"]) for t in store.trades("BTC-USD")]


def test_every_vouched_trade_is_written_once_and_a_restart_writes_nothing_twice(store):
    items, trades = produce(10)
    follower = Follower(store, [Node("a", items)])
    run(follower, 6)
    held = [t["id"] for block in trades[:9] for t in block]          # the tenth waits for the header after it
    assert written(store) == held and store.progress() == (9, written_id(store, 9))
    assert store.trades("BTC-USD")[0] == {k: trades[0][0][k] for k in store.trades("BTC-USD")[0]}
    assert len(store.fills(MAKER.public_key.hex())) == 9
    more, more_trades = produce(14)
    again = Follower(store, [Node("a", more)])                       # a restart replays from the genesis
    run(again, 8)
    assert written(store) == [t["id"] for block in more_trades[:13] for t in block]
    assert store.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM trades").fetchone() == (13, 13)
    assert store.query("SELECT COUNT(*) FROM blocks").fetchone() == (13,)


@pytest.mark.parametrize("lag", [0, 2])
def test_a_restart_resumes_from_the_replays_snapshot_checked_by_the_next_header(store, lag):
    genesis = Genesis("indexer-snapshots", 1_000, KEY.public_key, (KEY.public_key,), snapshot_interval=5,
                      snapshot_lag=lag, exchange=ExchangeParams("BTC-USD").to_wire())
    items, trades = produce(20, genesis=genesis)
    run(Follower(store, [Node("a", items[:14], genesis=genesis)]), 6)
    assert store.progress() == (13, store.block_id(13)) and (store.snapshot() or (0,))[0] == 10
    node = Node("a", items, genesis=genesis)
    run(Follower(store, [node]), 4)
    assert node.starts[0] == 11                                          # not from the genesis
    assert written(store) == [t["id"] for block in trades[:19] for t in block]
    assert store.query("SELECT COUNT(*), COUNT(DISTINCT id) FROM trades").fetchone() == (19, 19)
    assert (store.snapshot() or (0,))[0] == 15


def test_a_snapshot_that_does_not_restore_is_replayed_from_the_genesis(store, caplog):
    genesis = Genesis("indexer-snapshots", 1_000, KEY.public_key, (KEY.public_key,), snapshot_interval=5,
                      exchange=ExchangeParams("BTC-USD").to_wire())
    items, trades = produce(9, genesis=genesis)
    run(Follower(store, [Node("a", items[:7], genesis=genesis)]), 3)
    store.query("UPDATE replica SET data = ?", (b"not a snapshot",))
    node = Node("a", items, genesis=genesis)
    run(Follower(store, [node]), 4)
    assert node.starts[0] == 1 and "does not restore" in caplog.text
    assert written(store) == [t["id"] for block in trades[:8] for t in block]


@pytest.mark.parametrize("lie, reason", [(altered, "altered_block"), (forged, "bad_certificate")])
def test_a_node_serving_an_altered_or_uncertified_block_is_refused_and_the_next_node_answers(store, caplog, lie,
                                                                                             reason):
    items, trades = produce(8)
    liar, honest = Node("http://liar", items, lie), Node("http://honest", items)
    follower = Follower(store, [liar, honest])
    with pytest.raises(Refused) as refused:
        follower.step()                          # blocks 1-3: fine
        follower.step()                          # block 4 is the lie
    assert refused.value.node == "http://liar" and refused.value.reason == reason
    assert written(store) == [t["id"] for block in trades[:2] for t in block]   # block 3 waits for a certified 4
    run(follower, 1)
    assert follower.source is honest
    run(follower, 6)
    assert written(store) == [t["id"] for block in trades[:7] for t in block]
    assert {t["price"] for t in store.trades("BTC-USD")} <= {f"{100 + h % 5}.00" for h in range(1, 9)}


def test_the_lie_is_named_in_the_log(store, caplog):
    items, _ = produce(5)
    follower = Follower(store, [Node("http://liar", items, forged), Node("http://honest", items)])
    run(follower, 4)
    assert "refused http://liar (bad_certificate)" in caplog.text and store.progress() == (4, written_id(store, 4))


def test_a_node_of_another_chain_is_refused(store):
    items, _ = produce(3)
    Follower(store, [Node("a", items)]).step()
    other = Genesis("indexer-other", 1_000, KEY.public_key, (KEY.public_key,), exchange=ExchangeParams("BTC-USD").to_wire())
    with pytest.raises(Refused) as refused:
        Follower(store, [Node("b", items, genesis=other)]).step()
    assert refused.value.reason == "other_chain"


def test_a_certified_state_the_replay_did_not_reach_stops_with_nothing_after_it_written(store):
    items, trades = produce(6, bad_state_at=5)
    follower = Follower(store, [Node("a", items)])
    follower.step()
    with pytest.raises(Diverged):
        follower.step()
    assert written(store) == [t["id"] for block in trades[:3] for t in block]   # block 4 is never vouched for


def test_a_failed_write_leaves_nothing(store):
    _, trades = produce(3)
    good = VerifiedBlock(1, "b1", 11_000, trades[0])
    store.add_blocks([good])
    broken = VerifiedBlock(2, "b2", 12_000, [{**trades[1][0], "price": None}])
    with pytest.raises(sqlite3.IntegrityError):
        store.add_blocks([VerifiedBlock(3, "b3", 13_000, trades[2]), broken])
    assert written(store) == [trades[0][0]["id"]] and store.progress() == (1, "b1")


def test_candles_come_from_the_stored_trades(store):
    def trade(n: int, price: str, qty: str = "1.0000") -> dict[str, object]:
        return {"id": f"t{n}", "market": "BTC-USD", "price": price, "qty": qty, "maker_order_id": f"m{n}",
                "taker_order_id": f"k{n}", "taker_side": "buy", "maker_account": "a" * 64, "taker_account": "b" * 64,
                "height": n, "time_ms": 1_000 * n}

    store.add_blocks([VerifiedBlock(1, "b1", 1_000, [trade(1, "100.00"), trade(2, "102.00", "0.5000"),
                                                     trade(61, "99.00")])])
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
