"""The operator surface's view of the chain: the stream's MarketSource and feed, readiness, metrics.

Each block that becomes final here is published to the market-data stream (level changes, trades,
this node's accounts' order updates); submissions are timed to finality for the histogram; `/ready`
says ready only on a chain, with a quorum, caught up, not recovering and finalising (a quorum that is
heard yet makes no block, as under a flood that outruns it, is a stall: even an idle chain makes a block
a second); `/metrics` carries the chain's height, epoch, validator count, role, quorum and finality lag.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.app.machine import Venue
from exchange.app.results import BlockResult
from exchange.chain.types.blocks import Block
from exchange.chain.core import ChainCore
from exchange.chain.service import ChainService
from node.accounts import AccountStore
from node.api.base import JsonObject
from node.finality import FinalityTracker
from node.history_db import HistoryUnavailable
from node.marketdata.book import Level
from node.marketdata.feed import MarketFeed, TradePrint
from node.metrics import CounterNames, labelled_counter, split_counters

CHAIN_COUNTERS = CounterNames("exchange_node_chain", "Chain")
BEHIND_HEIGHTS = 2          # peers this many heights ahead or fewer: level with the network
FAR_BEHIND_HEIGHTS = 10     # more than this: catching up at once
CATCH_UP_GRACE = 3.0        # s a node that was level may trail by a few heights (a burst's full blocks) and be ready


class ChainBridge:
    def __init__(self, chain: ChainService, accounts: AccountStore, finality: FinalityTracker,
                 stall_after: float, clock: Callable[[], float] = time.time) -> None:
        self.chain = chain
        self.stall_after = stall_after      # s without a final block here, a quorum heard, before /ready says stalled
        self.accounts = accounts
        self.finality = finality
        self.clock = clock
        self.feed: MarketFeed | None = None
        # the candles of the history database (node/history_db.py) when HISTORY_DB is set
        self.history: Callable[[str, int, int | None], list[JsonObject]] | None = None
        self.last_block_at = clock()        # our clock when a block last became final here (or we started)
        self.level_at = float("-inf")       # our clock when we were last within BEHIND_HEIGHTS of the network
        chain.finality_observers.append(finality.observe_finality)
        chain.block_listeners.append(self._note_block)

    def _note_block(self, block: Block, result: BlockResult | None) -> None:
        now = self.last_block_at = self.clock()
        core = self.chain.core
        if core is not None:
            self._network_height(core, now)

    def _network_height(self, core: ChainCore, now: float) -> int:
        """The height the network has reached as far as we can tell (ours if nobody says more), noting when we
        were last level with it."""
        claimed = core.sync.network_height(now)        # f + 1 validators' word, never a stranger's
        best = core.height if claimed is None else claimed
        if best <= core.height + BEHIND_HEIGHTS:
            self.level_at = now
        return best

    # --- MarketSource ----------------------------------------------------------------------------
    def _venue(self, market: str) -> Venue | None:
        app = self.chain.app
        return None if app is None else app.venues.get(market)

    def levels(self, market: str) -> tuple[list[Level], list[Level]]:
        venue = self._venue(market)
        if venue is None:
            return [], []
        depth = venue.engine.depth(None)
        return depth["bids"], depth["asks"]

    def recent_trades(self, market: str, limit: int) -> list[TradePrint]:
        venue = self._venue(market)
        if venue is None:
            return []
        return [_print(row) for row in list(venue.trades)[-limit:]]

    def candles(self, market: str, interval_ms: int, start_ms: int | None) -> list[JsonObject]:
        app = self.chain.app
        if app is None or market not in app.venues:
            return []
        if self.history is not None:        # HISTORY_DB: the indexer's trades, then the kept ones
            try:
                return self.history(market, interval_ms, start_ms)
            except HistoryUnavailable:      # logged where it failed; the kept trades meanwhile
                pass
        return app.candles(market, interval_ms, start_ms)

    def open_orders(self) -> list[JsonObject]:
        state = self.chain.app
        if state is None or self.accounts is None:
            return []
        orders: list[JsonObject] = []
        for account in self.accounts.list():
            orders.extend(self.chain.submissions.pending_orders(account.id))     # answered 202, in no block yet
            orders.extend(state.orders(account.id, "open", 1000))
        return orders

    # --- feeding the stream ----------------------------------------------------------------------
    def attach(self, feed: MarketFeed) -> None:
        self.feed = feed
        self.chain.block_listeners.append(self._on_block)
        feed.resync(trades=True)

    def _on_block(self, block: Block, result: BlockResult | None) -> None:
        feed = self.feed
        if feed is None or result is None:
            return
        app = self.chain.app
        if app is None:
            return
        registry = app.params.registry
        for symbol, changes in result.book_changes.items():
            if symbol not in feed.markets:
                continue
            market = registry.get(symbol)
            for side, price, qty in changes:
                lots = 0 if _is_zero(qty) else market.parse_qty(qty)
                feed.publish_level(symbol, "bids" if side in ("buy", "bids") else "asks", market.parse_price(price),
                                   lots)
        ts = block.header.time_ms / 1000.0
        for market, row in result._trade_rows:
            if market.symbol in feed.markets:
                feed.publish_trade(market.symbol, _print(row), ts=ts)
        if self.accounts is not None:
            own = result.order_updates_of({account.id for account in self.accounts.list()})
            if own:
                feed.publish_orders(own)

    # --- readiness and metrics -------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Whether this node serves the chain as it is, and if not why. A node a few heights behind that was level
        with the network within CATCH_UP_GRACE is following it live (applying a burst's full blocks, a follower
        trails by a second's worth): ready. One that has not been level since it started, or for longer, or
        is more than FAR_BEHIND_HEIGHTS behind, is catching up."""
        chain = self.chain
        core = chain.core
        if core is None:
            return False, f"not on a chain yet: {chain.founding_status}"
        if chain.fatal or chain.halted or core.halted:
            return False, chain.fatal or chain.halted or core.halted or "halted"
        if chain.recovering is not None:
            return False, f"recovering damaged history ({chain.recovering['missing']}) from peers"
        problem = chain.storage_problem
        if problem is not None:
            return False, f"disk error: {problem}"
        now = self.clock()
        if not core.quorum_present(now):
            return False, chain.halt_watch.reason(now) or "no quorum of validators reachable"
        best = self._network_height(core, now)
        if best > core.height + BEHIND_HEIGHTS and (best > core.height + FAR_BEHIND_HEIGHTS
                                                    or now - self.level_at > CATCH_UP_GRACE):
            return False, f"catching up: height {core.height}, peers at {best}"
        stalled = now - self.last_block_at
        if stalled > max(self.stall_after, 5 * chain.config.empty_block_interval):
            return False, (f"finality stalled: no block final here for {stalled:.0f}s although a quorum of "
                           f"validators is heard (height {core.height})")
        return True, f"{core.role} at height {core.height}, epoch {core.state.validators.epoch}"

    def status(self) -> JsonObject:
        core = self.chain.core
        if core is None:
            return {"height": 0, "pending_events": 0}
        return {"height": core.height, "pending_events": core.own_pending(), "role": core.role,
                "finality_lag_s": round(max(0.0, self.clock() - core.state.time_ms / 1000), 3)}

    def metrics(self) -> Iterator[Metric]:
        chain = self.chain
        core = chain.core
        if core is None:        # the service's own counters exist before the chain does
            yield GaugeMetricFamily("exchange_node_chain_networks_in_sight", "Networks with this NETWORK_ID that a "
                                    "node on no chain yet sees and has nothing to choose between (2 or more: it "
                                    "joins none until given CHAIN_ID or a join token)",
                                    value=len(chain.founding.networks))
            yield from split_counters(CHAIN_COUNTERS, chain.counters)
            return
        now = self.clock()
        state = core.state
        yield GaugeMetricFamily("exchange_node_chain_height", "Height of the last final block here", value=core.height)
        yield GaugeMetricFamily("exchange_node_chain_epoch", "Validator set epoch", value=state.validators.epoch)
        yield GaugeMetricFamily("exchange_node_chain_validators", "Validators in the current set",
                                value=len(state.validators))
        yield GaugeMetricFamily("exchange_node_chain_is_validator", "1 if this node holds a validator seat",
                                value=1 if core.is_validator else 0)
        yield GaugeMetricFamily("exchange_node_chain_quorum", "1 if a quorum of validators is reachable",
                                value=1 if core.quorum_present(now) else 0)
        yield GaugeMetricFamily("exchange_node_chain_halted_seconds",
                                "Seconds this node has been without a quorum of validators (0 while it has one)",
                                value=chain.halt_watch.halted_seconds(now))
        yield GaugeMetricFamily("exchange_node_chain_finality_lag_seconds", "Seconds since the last final block's time",
                                value=max(0.0, now - state.time_ms / 1000))
        yield GaugeMetricFamily("exchange_node_chain_mempool_transactions", "Transactions waiting for a block",
                                value=len(core.mempool))
        yield GaugeMetricFamily("exchange_node_chain_outbox_transactions",
                                "This node's users' transactions not yet in a block", value=core.own_pending())
        held = state.snapshots.held
        yield GaugeMetricFamily("exchange_node_snapshot_loop_held_seconds", "How long taking the last snapshot held "
                                "the event loop (a fork, an encoding at once, or a wait for a late one)",
                                value=held.last_seconds)
        yield GaugeMetricFamily("exchange_node_snapshot_loop_held_longest_seconds",
                                "The longest a snapshot held the event loop since the node started",
                                value=held.longest_seconds)
        yield from split_counters(CHAIN_COUNTERS, {**core.counters, **chain.counters})
        yield labelled_counter("exchange_node_chain_refused_proposals", "Proposals this node refused to vote for, "
                               "by reason", "reason", core.check.refused)
        yield labelled_counter("exchange_node_storage_record_syncs", "fdatasyncs of appended records, by log",
                               "log", chain.store.fsyncs())
        consensus = CounterMetricFamily("exchange_node_consensus_events", "Consensus events, by kind", labels=["kind"])
        for kind, value in core.consensus.counters.items():
            consensus.add_metric([kind], value)
        yield consensus


def _is_zero(amount: str) -> bool:
    return amount.strip("0.") == ""


def _print(row: tuple[Any, ...]) -> TradePrint:
    trade_id, price, qty, maker, taker, taker_side = row[:6]
    buy, sell = (taker, maker) if taker_side == "buy" else (maker, taker)
    return TradePrint(trade_id, price, qty, taker_side, maker, taker, buy, sell)
