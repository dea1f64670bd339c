"""Transactions on their way into a block: the pool with its lanes (`pool.py`), intake from the API, peers and
gossip (`intake.py`) within each sender's budget (`tx_budget.py`, `account_rate.py`), where a non-validator
sends them (`forwarding.py`), and our users' own transactions from the API's call to finality
(`submissions.py`, `own_orders.py`)."""
