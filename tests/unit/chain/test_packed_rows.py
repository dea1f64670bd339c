"""A snapshot joins rows it kept packed (exchange/app/packed_rows.py): it must be byte for byte the plain
encoding after anything the state does between two snapshots, and it packs again only what changed."""
from __future__ import annotations

import logging

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import NewOrderOp
from exchange.app import closed_rows, packed_rows, resting_rows
from tests.snapshot_reference import plain_snapshot
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, Workload

PARAMS = ExchangeParams(MARKETS, closed_order_history=40, trade_history=10, credit_limits={"USD": "50"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), every=st.integers(1, 7), per_block=st.integers(1, 40),
       run=st.sampled_from([1, 3, 16, 256]))
def test_every_snapshot_is_the_plain_encoding(seed, every, per_block, run):
    """Any run length: with the history of 40 closed orders, short runs are forgotten whole and cut at the oldest
    end between snapshots, and a level's orders leave runs at the front, the middle and the back; the longest
    keeps the history in the rows not yet joined and a level in one run."""
    defaults = closed_rows.RUN, resting_rows.RUN
    closed_rows.RUN = resting_rows.RUN = run
    try:
        _every_snapshot_is_the_plain_encoding(seed, every, per_block)
    finally:
        closed_rows.RUN, resting_rows.RUN = defaults


def _every_snapshot_is_the_plain_encoding(seed: int, every: int, per_block: int) -> None:
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    rebuilt = Recorded()
    logging.getLogger("exchange.app").addHandler(rebuilt)
    try:
        for n, block in enumerate(Workload(seed=seed, accounts=4).blocks(60 * per_block, per_block=per_block)):
            chain.block(block)
            if n % every == 0:
                assert packed_rows_snapshot(chain.state) == plain_snapshot(chain.state), f"block {n}"
    finally:
        logging.getLogger("exchange.app").removeHandler(rebuilt)
    assert rebuilt.messages == [], "the blocks' record of touched orders missed a change the runs needed"


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def packed_rows_snapshot(state: ExchangeState) -> bytes:
    from exchange.app.snapshot import _encode_state
    return b"".join(_encode_state(state))


def recorded_packs(monkeypatch) -> list[object]:
    """Every value packed_rows packs from now on."""
    packed: list[object] = []
    real = packed_rows.packb

    def recording(value: object) -> bytes:
        packed.append(value)
        return real(value)
    monkeypatch.setattr(packed_rows, "packb", recording)
    return packed


def recorded_closed_packs(monkeypatch) -> list[bytes]:
    """Every closed order's row packed from now on."""
    packed: list[bytes] = []

    class Recording:
        def __init__(self, real: msgpack.Packer) -> None:
            self.real = real

        def pack(self, value: object) -> bytes:
            packed.append(self.real.pack(value))
            return packed[-1]

        def pack_array_header(self, size: int) -> bytes:
            return self.real.pack_array_header(size)
    monkeypatch.setattr(closed_rows, "_PACKER", Recording(closed_rows._PACKER))
    return packed


def busy_chain() -> Chain:
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    for block in Workload(seed=3, accounts=5).blocks(200, per_block=20):
        chain.block(block)
    return chain


def test_a_restored_state_snapshots_to_the_bytes_it_came_from():
    data = busy_chain().state.snapshot()
    restored = ExchangeState.restore(PARAMS, data, CHAIN)
    assert restored.snapshot() == data == plain_snapshot(restored)


def test_an_unchanged_state_packs_no_row_again(monkeypatch):
    state = busy_chain().state
    state.snapshot()
    packed = recorded_packs(monkeypatch)
    state.snapshot()
    rows = [value for value in packed if isinstance(value, list)]
    assert rows == [], f"{len(rows)} rows packed again"


def test_a_level_changed_where_no_block_recorded_it_is_rebuilt_from_the_level(caplog):
    """The runs trust the blocks' record of the orders they touched, and check it against each level's count and
    volume: a change that record missed costs a rebuild of the level, not a wrong snapshot."""
    state = busy_chain().state
    before = state.snapshot()
    order = next(iter(state.open_orders.values()))
    side = state.venues[order.market].engine.book.side_of(order.side)
    side.shrink(order, 1)       # what a reduce does to the book, with no block to record it
    with caplog.at_level("WARNING", logger="exchange.app"):
        after = packed_rows_snapshot(state)
    assert after != before and after == plain_snapshot(state)
    assert "did not match it: rebuilt" in caplog.text


def test_a_closed_order_is_packed_once_at_the_end_of_its_block_and_its_run_is_joined_once(monkeypatch):
    """The rows of closed orders are packed when their block ends, and a snapshot packs none and joins only the
    newest rows: a forked child (which cannot hand its work back) finds them done, and a full history costs a piece
    per run."""
    monkeypatch.setattr(closed_rows, "RUN", 4)
    chain = Chain(ExchangeState(ExchangeParams(MARKETS, closed_order_history=1_000), CHAIN))
    blocks = Workload(seed=5, accounts=5).blocks(440 * 30, per_block=30)
    for block in blocks[:400]:
        chain.block(block)
    closed = chain.state.closed
    assert len(closed) > 100, "too few closed orders to test runs"
    packed = recorded_closed_packs(monkeypatch)
    parts: list[bytes] = []
    chain.state.packed_rows.closed(closed, parts)
    assert packed == [], f"{len(packed)} closed rows packed at the snapshot"
    assert len(parts) <= 1 + len(closed) // 4 + 4, f"{len(parts)} pieces for {len(closed)} closed orders"
    assert b"".join(parts) == msgpack.packb([closed_rows.closed_row(order) for order in closed], use_bin_type=True)
    before = closed.added
    for block in blocks[400:]:
        chain.block(block)
        assert len(packed) == closed.added - before, "a block's closed orders are packed at its end, once each"
    assert closed.added > before, "no order closed in the blocks after the snapshot"


def test_the_oldest_closed_orders_forgotten_are_cut_from_their_run(monkeypatch):
    monkeypatch.setattr(closed_rows, "RUN", 8)
    params = ExchangeParams(MARKETS, closed_order_history=30)
    chain = Chain(ExchangeState(params, CHAIN))
    cuts = 0
    for block in Workload(seed=9, accounts=5).blocks(120 * 7, per_block=7):
        chain.block(block)
        closed = chain.state.closed
        cuts += (closed.added - len(closed)) % 8 != 0
        assert packed_rows_snapshot(chain.state) == plain_snapshot(chain.state)
    assert cuts, "the oldest kept closed order never fell inside a run"


def test_more_orders_closed_in_one_block_than_the_history_keeps(monkeypatch):
    """Orders closed and forgotten before their block ends are never packed; the rows packed before are dropped."""
    monkeypatch.setattr(closed_rows, "RUN", 4)
    chain = Chain(ExchangeState(ExchangeParams(MARKETS, closed_order_history=5), CHAIN))
    for block in Workload(seed=10, accounts=5).blocks(40 * 40, per_block=40):
        chain.block(block)
        assert packed_rows_snapshot(chain.state) == plain_snapshot(chain.state)


def test_a_replay_bucket_replaced_by_another_of_the_same_size_is_packed_again():
    state = busy_chain().state
    state.snapshot()
    key, ids = next(iter(state.replay.buckets.items()))
    state.replay.buckets[key] = dict.fromkeys(f"{n:032x}" for n in range(len(ids)))
    assert packed_rows_snapshot(state) == plain_snapshot(state)


@pytest.mark.parametrize("snapshots", [True, False])
def test_the_kept_rows_and_runs_are_exactly_the_resting_orders_after_every_block(monkeypatch, snapshots):
    """Rows of orders gone from the book are dropped at the end of the block they went in, whether the node
    gathers its snapshots (and so sees its runs) or forks them (and so never does)."""
    monkeypatch.setattr(resting_rows, "RUN", 4)
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    for block in Workload(seed=11, accounts=6).blocks(1500, per_block=30):
        chain.block(block)
        if snapshots:
            chain.state.snapshot()
        for venue in chain.state.venues.values():
            kept = chain.state.packed_rows._resting.get(venue.market.symbol)
            resting = set(venue.engine.book.orders.values())
            if kept is None:
                assert not resting
                continue
            assert set(kept._where) == resting and set(kept._rows) <= resting
            assert all(level.live for level in kept._levels), "a level with no live order is kept"


@pytest.mark.parametrize("timers", [False, True])
def test_both_formats_join_to_the_plain_encoding(timers):
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    for block in Workload(seed=21, accounts=3, timers=timers).blocks(150, per_block=15):
        chain.block(block)
    assert packed_rows_snapshot(chain.state) == plain_snapshot(chain.state)


def test_rows_a_block_leaves_resting_are_packed_at_its_end_not_at_the_snapshot(monkeypatch):
    chain = busy_chain()
    chain.state.snapshot()
    blocks = Workload(seed=8, accounts=5).blocks(40, per_block=20)
    for block in blocks:
        chain.block(block)
    packed = recorded_packs(monkeypatch)
    assert packed_rows_snapshot(chain.state) == plain_snapshot(chain.state)
    resting_rows = [value for value in packed if isinstance(value, list) and len(value) == 7]
    assert resting_rows == [], f"{len(resting_rows)} resting rows packed at the snapshot"


def test_a_long_level_is_a_piece_per_run_at_the_snapshot(monkeypatch):
    """One price with many orders (what a flood of one-lot orders builds) costs a snapshot a piece per RUN orders,
    and only the runs the blocks since changed were joined again."""
    monkeypatch.setattr(resting_rows, "RUN", 16)
    chain = Chain(ExchangeState(PARAMS, CHAIN))
    make = Workload(seed=4).make
    for _ in range(40):
        chain.block([make(n % 4, [NewOrderOp.parse("BTC-USD", "buy", "limit", "90.00", "0.0001", None)])
                     for n in range(20)])
    book = chain.state.venues["BTC-USD"].engine.book
    (level,) = book.bids.levels.values()
    assert level.live == 800
    parts: list[bytes] = []
    chain.state.packed_rows.book(book, chain.state.venues["BTC-USD"].market, parts)
    assert len(parts) < 12 + 800 // 16 + 8, f"{len(parts)} pieces for one level of 800 orders"
