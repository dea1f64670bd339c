"""Catching up with peers: certified blocks fetched and served (`blocksync.py`, `claims.py`,
`sync_budget.py`), a start from a peer's snapshot (`statesync.py`, `epochs.py`), what peers say of their chain
and what we say of ours (`peer_chains.py`), and what this node serves them over RPC (`serving.py`)."""
