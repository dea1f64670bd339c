"""The chain's vocabulary, shared by every part and owning no state: the canonical encoding (`codec.py`),
validator sets (`validators.py`), blocks, votes, proposals and commits (`blocks.py`), and the genesis a chain
starts from (`genesis.py`)."""
