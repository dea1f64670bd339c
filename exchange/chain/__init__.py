"""The chain: signed transactions ordered by a BFT validator set, folded into the exchange state.

Packages by concern, each owning its state: `types/` (blocks, votes, validator sets, genesis), `state/` (the
deterministic fold and the seat registry), `consensus/`, `mempool/`, `sync/`, `seats/`, `store/` and
`recovery/`. At the top, `core.py` is one node's part with no I/O, coordinating the sans-I/O parts through
typed effects (`effects.py`); `service.py` runs a core inside a node over the seams of `ports.py`, starting
from stored history (`boot.py`) on the clock of `ticker.py`.
"""
