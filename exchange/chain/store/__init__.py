"""The chain on disk: blocks and the signing record (`block_store.py`), our users' accepted transactions
(`outbox.py`, over `reopening.py`), the order in which writes come before sends (`durability.py`), and
snapshots made off the event loop (`snapshot_fork.py`, `snapshot_live.py`)."""
