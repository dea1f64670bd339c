"""Property tests over random operation sequences: invariants after every operation, replay and
snapshot determinism, and agreement with the naive reference matcher."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.commands import CancelOrder, Command, NewOrder
from exchange.events import OrderAccepted, OrderCancelled, Trade
from exchange.matching import MatchingEngine
from exchange.orders import Order, Side
from tests.unit.exchange.streams import MARKET, commands, operations
from tests.unit.exchange.reference import ReferenceMatcher, describe

def run(command_list: list[Command]) -> tuple[MatchingEngine, list[list[Mapping[str, object]]]]:
    engine = MatchingEngine(MARKET)
    return engine, [[event.to_dict() for event in engine.apply(command)] for command in command_list]


def l3(engine: MatchingEngine) -> dict[str, list[tuple[str, int | None, int]]]:
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
