"""Property tests over random operation sequences: invariants after every operation, replay and
snapshot determinism, and agreement with the naive reference matcher."""
from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.commands import CancelOrder, NewOrder, ReduceOrder, ReplaceOrder
from exchange.events import OrderAccepted, OrderCancelled, Trade
from exchange.markets import parse_market_entry
from exchange.matching import MatchingEngine
from exchange.orders import Order, OrderType, SelfTradeMode, Side
from tests.unit.exchange_reference import ReferenceMatcher, describe

MARKET = parse_market_entry("TEST-USD:1:1:1:100:1:1000")
TYPES = [OrderType.LIMIT] * 4 + [OrderType.MARKET, OrderType.IOC, OrderType.FOK, OrderType.POST_ONLY]
MODES = [None, *SelfTradeMode]

new_order = st.tuples(st.just("new"), st.sampled_from(list(Side)), st.sampled_from(TYPES), st.integers(95, 105),
                      st.integers(1, 8), st.sampled_from(["ann", "bob", "cat"]), st.sampled_from(MODES))
by_index = st.tuples(st.sampled_from(["cancel", "reduce", "replace"]), st.integers(0, 200), st.integers(1, 5),
                     st.integers(95, 105))
operations = st.lists(st.one_of(new_order, new_order, by_index), max_size=60)


def commands(plan: list[tuple]) -> list[object]:
    """Turn a drawn plan into commands; cancel/reduce/replace refer to earlier ids by index (some long gone)."""
    issued: list[str] = []
    result: list[object] = []
    for step in plan:
        if step[0] == "new":
            _, side, kind, price, qty, owner, mode = step
            order_id = f"o{len(issued)}"
            issued.append(order_id)
            result.append(NewOrder(order_id, side, kind, qty, None if kind is OrderType.MARKET else price,
                                   owner, (len(result), "node", len(issued)), mode))
        elif issued:
            verb, index, size, price = step
            target = issued[index % len(issued)]
            if verb == "cancel":
                result.append(CancelOrder(target))
            elif verb == "reduce":
                result.append(ReduceOrder(target, size))
            else:
                new_id = f"o{len(issued)}"
                issued.append(new_id)
                result.append(ReplaceOrder(target, new_id, size + 2, price, (len(result), "node", len(issued))))
    return result


def run(command_list: list[object]) -> tuple[MatchingEngine, list[list[dict]]]:
    engine = MatchingEngine(MARKET)
    return engine, [[event.to_dict() for event in engine.apply(command)] for command in command_list]


def l3(engine: MatchingEngine) -> dict[str, list[tuple[str, int, int]]]:
    return {name: [(o.id, o.price, o.remaining) for o in orders] for name, orders in engine.l3().items()}


@settings(max_examples=150, deadline=None)
@given(operations)
def test_invariants_hold_after_every_operation(plan: list[tuple]) -> None:
    engine = MatchingEngine(MARKET)
    accepted: dict[str, Order] = {}
    traded: dict[str, int] = defaultdict(int)
    cancelled: set[str] = set()
    for command in commands(plan):
        for event in engine.apply(command):
            if isinstance(event, OrderAccepted):
                accepted[event.order.id] = event.order
            elif isinstance(event, Trade):
                assert event.taker_order_id not in cancelled and event.maker_order_id not in cancelled
                assert event.taker.owner != event.maker.owner, "self-trade prevention let a self-trade through"
                assert event.taker.side is not event.maker.side
                traded[event.taker_order_id] += event.quantity
                traded[event.maker_order_id] += event.quantity
            elif isinstance(event, OrderCancelled):
                cancelled.add(event.order_id)
        assert not engine.book.is_crossed()
        for order_id, lots in traded.items():
            order = accepted[order_id]
            assert lots == order.filled <= order.quantity, "filled beyond quantity or fills lost"
        for side in (engine.book.bids, engine.book.asks):
            for level in side.iter_levels():
                live = list(level.live_orders())
                assert live and level.live == len(live) and level.volume == sum(o.remaining for o in live)
                assert all(o.remaining > 0 and o.price == level.price for o in live)
        assert set(engine.book.orders) == {o.id for orders in engine.l3().values() for o in orders}
    bought = sum(o.filled for o in accepted.values() if o.side is Side.BUY)
    sold = sum(o.filled for o in accepted.values() if o.side is Side.SELL)
    assert bought == sold


@settings(max_examples=150, deadline=None)
@given(operations)
def test_engine_agrees_with_the_naive_reference(plan: list[tuple]) -> None:
    engine = MatchingEngine(MARKET)
    reference = ReferenceMatcher()
    for command in commands(plan):
        ours = [describe(event) for event in engine.apply(command)]
        assert ours == reference.apply(command), command.to_dict()
    assert l3(engine) == reference.book()


@settings(max_examples=100, deadline=None)
@given(operations, st.integers(0, 60))
def test_replay_and_snapshot_restore_are_deterministic(plan: list[tuple], split: int) -> None:
    command_list = commands(plan)
    first, first_events = run(command_list)
    second, second_events = run(command_list)
    assert first_events == second_events
    assert first.digest() == second.digest()
    head, tail = command_list[:split], command_list[split:]
    original, _ = run(head)
    restored = MatchingEngine(MARKET)
    restored.restore(original.snapshot())
    assert restored.digest() == original.digest()
    for command in tail:
        assert [e.to_dict() for e in restored.apply(command)] == [e.to_dict() for e in original.apply(command)]
    assert restored.digest() == original.digest() == first.digest()


@settings(max_examples=100, deadline=None)
@given(operations)
def test_plain_argument_entry_points_match_the_command_api(plan: list[tuple]) -> None:
    """place_order / cancel_order (the hot path the ledger and the bench use) are `apply` without the object."""
    by_command, by_arguments = MatchingEngine(MARKET), MatchingEngine(MARKET)
    for command in commands(plan):
        expected = [e.to_dict() for e in by_command.apply(command)]
        if type(command) is NewOrder:
            got = by_arguments.place_order(command.order_id, command.side, command.order_type, command.quantity,
                                           command.price, command.owner, command.created_key, command.self_trade)
        elif type(command) is CancelOrder:
            got = by_arguments.cancel_order(command.order_id, command.owner)
        else:
            got = by_arguments.apply(command)
        assert [e.to_dict() for e in got] == expected
    assert by_arguments.digest() == by_command.digest()
