"""Authenticated state: an ordered Merkle map whose root a header can commit to, proofs of keys, absent keys
and complete ranges against that root, and a verifier that needs nothing but the root.

`tree.MerkleMap` builds and proves; `verify` checks (a light client imports only it, `proofs` and
`hashing`); `proofs` is the wire form and the typed reasons for refusing one.
"""
