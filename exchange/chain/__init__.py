"""The chain: signed transactions ordered by a BFT validator set, folded into the exchange state.

txs.py (signed account transactions), crypto.py, codec.py, blocks.py, validators.py, genesis.py,
membership.py, tendermint.py (consensus), chainstate.py (the deterministic fold), state/ (the
exchange state machine), mempool.py, core.py (one node's part, no I/O), founding.py, store.py (disk),
service.py (runs a core inside a node).
"""
