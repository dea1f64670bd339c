"""A small table language for matching scenarios: orders in, trades/events/book out.

Orders (one per line; prices in ticks, sizes in lots, `-` for no price):
    buy  b1 bob limit 101 5 [self_trade_mode]
    cancel b1 [owner]          reduce b1 2          replace b1 b2 102 4
Trades:  taker maker price qty
Events (everything except accepted and trade, in order):
    cancelled <id> <reason> <remaining>   rejected <id> <reason>   reduced <id> <by> <remaining> <reason>
Book (best level first, orders oldest first):  bid 100 b1:5 b2:3   /   ask 101 s1:2   /   (empty)
"""
from __future__ import annotations

from dataclasses import dataclass

from exchange.commands import CancelOrder, NewOrder, ReduceOrder, ReplaceOrder
from exchange.events import Event, OrderAccepted, OrderCancelled, OrderReduced, OrderRejected, Trade
from exchange.markets import Market, parse_market_entry
from exchange.matching import MatchingEngine
from exchange.orders import OrderType, SelfTradeMode, Side


@dataclass
class Scenario:
    name: str
    orders: str
    trades: str = ""
    events: str = ""
    book: str = "(empty)"
    market: str = "TEST-USD:1:1"

    def __str__(self) -> str:
        return self.name


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines() if line.strip() and not line.strip().startswith("#")]


def parse_command(words: list[str]) -> object:
    verb = words[0]
    if verb in ("buy", "sell"):
        _, order_id, owner, kind, price, qty, *mode = words
        return NewOrder(order_id, Side(verb), OrderType(kind), int(qty), None if price == "-" else int(price),
                        owner, created_key=None, self_trade=SelfTradeMode(mode[0]) if mode else None)
    if verb == "cancel":
        return CancelOrder(words[1], words[2] if len(words) > 2 else None)
    if verb == "reduce":
        return ReduceOrder(words[1], int(words[2]))
    if verb == "replace":
        return ReplaceOrder(words[1], words[2], int(words[4]), int(words[3]))
    raise ValueError(f"unknown scenario verb {verb!r}")


def describe_event(event: Event) -> str | None:
    """The Events-table line for an event; None for accepted and trade (they have their own tables)."""
    if isinstance(event, (OrderAccepted, Trade)):
        return None
    if isinstance(event, OrderCancelled):
        return f"cancelled {event.order_id} {event.reason} {event.remaining}"
    if isinstance(event, OrderRejected):
        return f"rejected {event.order_id} {event.reason}"
    if isinstance(event, OrderReduced):
        return f"reduced {event.order_id} {event.reduced_by} {event.remaining} {event.reason}"
    raise AssertionError(f"unexpected event {event!r}")


def describe_book(engine: MatchingEngine) -> list[str]:
    lines = []
    for name, side in (("bid", engine.book.bids), ("ask", engine.book.asks)):
        for level in side.iter_levels():
            orders = " ".join(f"{order.id}:{order.remaining}" for order in level.live_orders())
            lines.append(f"{name} {level.price} {orders}")
    return lines or ["(empty)"]


def run(scenario: Scenario) -> tuple[MatchingEngine, list[Event]]:
    market: Market = parse_market_entry(scenario.market)
    engine = MatchingEngine(market)
    events: list[Event] = []
    for words in rows(scenario.orders):
        events.extend(engine.apply(parse_command(words)))
    return engine, events


def check(scenario: Scenario) -> None:
    engine, events = run(scenario)
    trades = [f"{e.taker_order_id} {e.maker_order_id} {e.price} {e.quantity}" for e in events if isinstance(e, Trade)]
    assert trades == [" ".join(r) for r in rows(scenario.trades)], "trades"
    others = [line for line in map(describe_event, events) if line is not None]
    assert others == [" ".join(r) for r in rows(scenario.events)], "events"
    assert describe_book(engine) == [" ".join(r) for r in rows(scenario.book)], "book"
    assert not engine.book.is_crossed()
