"""The replicated state and its deterministic fold: `chainstate.py` applies a block to the exchange
application and the seat registry (`seats.py`), membership transactions (`membership.py`) say how seats change,
and a state's snapshot is made and proved here (`snapshot_maker.py`, `snapshot_proof.py`). Every node computes
the same values from the same blocks; nothing here knows about peers, time or disk."""
