"""Client order ids: each account's own names for its orders, unique among its open and recent orders.

A new order may carry a client id; the state machine gives it to the order only when no order of the
same account that the state still knows (open, or kept in the closed-order history) holds it, and
otherwise refuses the order `duplicate_client_id`. A claim lasts as long as its order is known: it
is dropped when the closed-order history forgets the order (`forget`), so the table is bounded by
open orders plus closed_order_history. A replace hands the client id on to the order it makes.

Lookups go by (account, client id); `by_client_id` also answers "every account's order with this id"
for a reader that does not name the account. Nothing here depends on arrival at one node: claims and
drops happen in block order, and the snapshot rows are sorted by order id.
"""
from __future__ import annotations

from exchange.wire import Wire


class ClientIds:
    __slots__ = ("by_order", "_index")

    def __init__(self) -> None:
        self.by_order: dict[str, tuple[str, str]] = {}        # order id -> (account, client id)
        self._index: dict[str, dict[str, str]] = {}           # client id -> {account: order id}

    def __len__(self) -> int:
        return len(self.by_order)

    def holder(self, account: str, client_id: str) -> str | None:
        """The order id of `account` that holds `client_id`, or None."""
        owners = self._index.get(client_id)
        return None if owners is None else owners.get(account)

    def by_client_id(self, client_id: str) -> list[str]:
        """Every account's order holding `client_id`, by account id (the same on every node)."""
        owners = self._index.get(client_id, {})
        return [owners[account] for account in sorted(owners)]

    def client_id(self, order_id: str) -> str | None:
        entry = self.by_order.get(order_id)
        return None if entry is None else entry[1]

    def claim(self, account: str, client_id: str, order_id: str) -> bool:
        """Give `client_id` to `order_id`; False (and nothing changes) if another order of `account` holds it."""
        owners = self._index.setdefault(client_id, {})
        if account in owners:
            return owners[account] == order_id
        owners[account] = order_id
        self.by_order[order_id] = (account, client_id)
        return True

    def move(self, old_order_id: str, new_order_id: str) -> None:
        """A replace: the order `new_order_id` takes over `old_order_id`'s client id, if it had one."""
        entry = self.by_order.pop(old_order_id, None)
        if entry is None:
            return
        account, client_id = entry
        self._index[client_id][account] = new_order_id
        self.by_order[new_order_id] = entry

    def forget(self, order_id: str) -> None:
        """The state no longer knows `order_id`: its client id is free again."""
        entry = self.by_order.pop(order_id, None)
        if entry is None:
            return
        account, client_id = entry
        owners = self._index[client_id]
        del owners[account]
        if not owners:
            del self._index[client_id]

    # ------------------------------------------------------------------ snapshots

    def rows(self) -> list[Wire]:
        """`[[order id, client id], ...]` sorted by order id (the account is the order's own)."""
        return [[order_id, entry[1]] for order_id, entry in sorted(self.by_order.items())]
