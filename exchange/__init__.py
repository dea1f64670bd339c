"""The exchange: its matching core (these modules: pure domain, no I/O), the state machine every node folds
blocks into (app/), the chain that orders its transactions (chain/) and the commitments to its state
(commitments/).

markets.py   Market rules and the registry parsed from MARKETS; exact decimal <-> ticks/lots
units.py     decimal string <-> integer units, never floats
orders.py    Side, OrderType, OrderStatus, SelfTradeMode, Order, order_id_from_key
commands.py  NewOrder, CancelOrder, ReduceOrder, ReplaceOrder; command_from_dict
events.py    OrderAccepted, Trade, OrderCancelled, OrderRejected, OrderReduced
book.py      OrderBook: sorted price levels, FIFO queues, id index, L2/L3 views
matching.py  MatchingEngine.apply(command) -> events; place_order/cancel_order take plain arguments
             (no command object: the hot path); views, digest, snapshot/restore
snapshot.py  canonical snapshot, restore and sha256 digest
display.py   API-shaped dicts with decimal strings
errors.py    typed errors with reason codes
"""
