"""Random order streams for the engine's property and differential tests: a drawn plan of new orders and
cancels, reduces and replaces by index into the ids issued so far (some long gone)."""
from __future__ import annotations

from hypothesis import strategies as st

from exchange.commands import CancelOrder, Command, NewOrder, ReduceOrder, ReplaceOrder
from exchange.markets import parse_market_entry
from exchange.orders import OrderType, SelfTradeMode, Side

MARKET = parse_market_entry("TEST-USD:1:1:1:100:1:1000")
TYPES = [OrderType.LIMIT] * 4 + [OrderType.MARKET, OrderType.IOC, OrderType.FOK, OrderType.POST_ONLY]
MODES = [None, *SelfTradeMode]

new_order = st.tuples(st.just("new"), st.sampled_from(list(Side)), st.sampled_from(TYPES), st.integers(95, 105),
                      st.integers(1, 8), st.sampled_from(["ann", "bob", "cat"]), st.sampled_from(MODES))
by_index = st.tuples(st.sampled_from(["cancel", "reduce", "replace"]), st.integers(0, 200), st.integers(1, 5),
                     st.integers(95, 105))
operations = st.lists(st.one_of(new_order, new_order, by_index), max_size=60)


def commands(plan: list[tuple]) -> list[Command]:
    """Turn a drawn plan into commands; cancel/reduce/replace refer to earlier ids by index (some long gone)."""
    issued: list[str] = []
    result: list[Command] = []
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
