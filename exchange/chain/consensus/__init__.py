"""Deciding the next block: Tendermint rounds (`tendermint.py`), whether a block may be the next one
(`block_check.py`), the block this validator proposes (`block_builder.py`, paced by `block_pace.py`), the
precommits that certify a block to followers (`precommit_quorum.py`), and a chain that cannot finalise saying
so (`halt_watch.py`)."""
