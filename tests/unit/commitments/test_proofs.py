"""Proofs against nothing but the root: members, non-members, ranges and first-n answers verify; every
single-bit corruption of a proof's bytes, of a value or of the root is refused; each way a proof can lie
has its own typed reason."""
from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.commitments.hashing import EMPTY_ROOT, value_digest
from exchange.commitments.proofs import Branch, Failure, Hidden, LeafDigest, LeafValue, Node, Proof, ProofError
import exchange.commitments.verify as verifier
from exchange.commitments.tree import MerkleMap
from exchange.commitments.verify import verify_first, verify_get, verify_range

KEY = 3
keys = st.binary(min_size=KEY, max_size=KEY)
mappings = st.dictionaries(keys, st.binary(max_size=8), max_size=30)


def roundtrip(proof: Proof) -> Proof:
    return Proof.decode(proof.encode())


@settings(max_examples=200, deadline=None)
@given(mappings, st.lists(keys, max_size=6))
def test_members_and_non_members_verify(items: dict[bytes, bytes], probes: list[bytes]) -> None:
    tree = MerkleMap(KEY, items.items())
    for key in list(items)[:6] + probes:
        value, proof = tree.prove_get(key)
        assert value == items.get(key)
        assert verify_get(tree.root(), key, roundtrip(proof)) == items.get(key)


@settings(max_examples=200, deadline=None)
@given(mappings, keys, keys)
def test_ranges_verify_complete_and_in_order(items: dict[bytes, bytes], a: bytes, b: bytes) -> None:
    lo, hi = min(a, b), max(a, b)
    tree = MerkleMap(KEY, items.items())
    entries, proof = tree.prove_range(lo, hi)
    expected = sorted((k, v) for k, v in items.items() if lo <= k <= hi)
    assert entries == expected == verify_range(tree.root(), lo, hi, roundtrip(proof))


@settings(max_examples=150, deadline=None)
@given(mappings, st.integers(1, 8))
def test_first_n_verifies_and_leaves_nothing_smaller_out(items: dict[bytes, bytes], n: int) -> None:
    tree = MerkleMap(KEY, items.items())
    lo, hi = bytes(KEY), b"\xff" * KEY
    entries, proof = tree.prove_first(lo, hi, n)
    assert entries == sorted(items.items())[:n] == verify_first(tree.root(), lo, hi, n, roundtrip(proof))


def _every_flip(data: bytes) -> list[bytes]:
    return [data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:] for i in range(len(data)) for bit in range(8)]


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(keys, st.binary(min_size=1, max_size=4), min_size=1, max_size=12), keys, keys)
def test_every_single_bit_corruption_is_refused(items: dict[bytes, bytes], a: bytes, b: bytes) -> None:
    lo, hi = min(a, b), max(a, b)
    tree = MerkleMap(KEY, items.items())
    root = tree.root()
    _, proof = tree.prove_range(lo, hi)
    data = proof.encode()
    for corrupt in _every_flip(data):                       # the proof's bytes, values and keys among them
        with pytest.raises(ProofError):
            verify_range(root, lo, hi, Proof.decode(corrupt))
    for corrupt in _every_flip(root):
        with pytest.raises(ProofError) as refused:
            verify_range(corrupt, lo, hi, proof)
        assert refused.value.failure is Failure.ROOT_MISMATCH


def test_a_changed_value_is_refused() -> None:
    tree = MerkleMap(KEY, [(b"aaa", b"10"), (b"aab", b"20"), (b"zzz", b"30")])
    _, proof = tree.prove_range(b"aaa", b"aab")
    lied = Proof(_map_leaves(proof.node, lambda leaf: replace(leaf, value=b"11") if leaf.key == b"aaa" else leaf))
    with pytest.raises(ProofError) as refused:
        verify_range(tree.root(), b"aaa", b"aab", lied)
    assert refused.value.failure is Failure.ROOT_MISMATCH


def _map_leaves(node: Node | None, change: Callable[[LeafValue], Node]) -> Node:
    assert node is not None
    if isinstance(node, Branch):
        return replace(node, left=_map_leaves(node.left, change), right=_map_leaves(node.right, change))
    return change(node) if isinstance(node, LeafValue) else node


def _book() -> MerkleMap:
    return MerkleMap(KEY, [(bytes([0, 0, p]), b"lvl%d" % p) for p in range(1, 40, 3)])


def test_a_hidden_member_is_refused_as_incomplete() -> None:
    """The node hides one level of the range behind its hash: the hashes still lead to the root, but the
    hidden subtree could hold keys of the range."""
    tree = _book()
    lo, hi = bytes([0, 0, 0]), bytes([0, 0, 20])
    _, proof = tree.prove_range(lo, hi)
    wide_entries, wide = tree.prove_range(lo, bytes([0, 0, 10]))    # a proof of a narrower range
    with pytest.raises(ProofError) as refused:
        verify_range(tree.root(), lo, hi, wide)
    assert refused.value.failure is Failure.INCOMPLETE
    assert verify_range(tree.root(), lo, hi, proof)[: len(wide_entries)] == wide_entries


def test_first_n_that_stops_early_is_refused() -> None:
    tree = _book()
    lo, hi = bytes(KEY), b"\xff" * KEY
    _, short = tree.prove_first(lo, hi, 3)
    with pytest.raises(ProofError) as refused:
        verify_first(tree.root(), lo, hi, 5, short)       # asked for 5, shown 3 and the rest hidden
    assert refused.value.failure is Failure.INCOMPLETE


def test_a_value_withheld_or_volunteered_is_refused() -> None:
    tree = _book()
    key = bytes([0, 0, 4])
    _, proof = tree.prove_get(key)
    withheld = Proof(_map_leaves(proof.node, lambda leaf: LeafDigest(leaf.key, value_digest(leaf.value))))
    with pytest.raises(ProofError) as refused:
        verify_get(tree.root(), key, withheld)
    assert refused.value.failure is Failure.VALUE_MISSING
    with pytest.raises(ProofError) as refused:
        verify_get(tree.root(), bytes([0, 0, 5]), proof)   # a proof of 4 shown as one of 5: 4 is outside
    assert refused.value.failure is Failure.VALUE_UNASKED


@pytest.mark.parametrize("node, failure", [
    (Branch(2, b"\x20", Hidden(b"h" * 32), Hidden(b"i" * 32)), Failure.BAD_PREFIX),     # bit 2 set: past the split
    (Branch(9, b"\x00", Hidden(b"h" * 32), Hidden(b"i" * 32)), Failure.BAD_PREFIX),     # 9 bits need 2 bytes
    (Branch(30, b"\x00" * 4, Hidden(b"h" * 32), Hidden(b"i" * 32)), Failure.BIT_ORDER),  # past a 24-bit key
    (Branch(3, b"\x00", Branch(2, b"\x00", Hidden(b"h" * 32), Hidden(b"i" * 32)), Hidden(b"j" * 32)),
     Failure.BIT_ORDER),                                                                 # a child above its parent
    (Branch(0, b"", LeafDigest(b"\x80\x00\x00", b"d" * 32), Hidden(b"j" * 32)), Failure.OFF_PATH),
    (Branch(0, b"", Branch(4, b"\x80", Hidden(b"h" * 32), Hidden(b"i" * 32)), Hidden(b"j" * 32)),
     Failure.OFF_PATH),
    (Branch(0, b"", LeafDigest(b"\x00\x00", b"d" * 32), Hidden(b"j" * 32)), Failure.WRONG_KEY_LENGTH),
    (Hidden(b"h" * 32), Failure.INCOMPLETE),
])
def test_each_malformed_tree_has_its_reason(node: Node, failure: Failure) -> None:
    with pytest.raises(ProofError) as refused:
        verify_range(b"r" * 32, b"\xf0\x00\x00", b"\xff\xff\xff", Proof(node))
    assert refused.value.failure is failure


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x02\xc0", b"\x92\x01\x92\x00\xc4\x01x", b"\x93\x01\xc0\xc0",
                                  b"\x92\x01\xc0\xc0", b"\x92\x01\x92\x07\xc4\x20" + b"h" * 32,
                                  b"\x92\x01\xc0" + b"\x00"])
def test_bytes_that_are_not_a_canonical_proof_are_malformed(data: bytes) -> None:
    with pytest.raises(ProofError) as refused:
        Proof.decode(data)
    assert refused.value.failure is Failure.MALFORMED


def test_the_empty_tree_proves_every_absence_and_nothing_else() -> None:
    empty = MerkleMap(KEY)
    _, proof = empty.prove_get(b"abc")
    assert roundtrip(proof) == proof and verify_get(EMPTY_ROOT, b"abc", proof) is None
    with pytest.raises(ProofError) as refused:
        verify_get(_book().root(), b"abc", proof)          # "empty" said of a tree that is not
    assert refused.value.failure is Failure.ROOT_MISMATCH
    with pytest.raises(ProofError) as refused:
        verify_range(EMPTY_ROOT, b"abd", b"abc", proof)
    assert refused.value.failure is Failure.BAD_QUERY


def test_the_deepest_tree_any_keys_make_proves_and_verifies() -> None:
    """A comb of 32-byte keys (one branch per bit, 256 deep, the most any key set can make): its deepest key
    and an absent key beside it prove and verify, within Python's recursion limit."""
    comb = {(1 << i).to_bytes(32, "big"): b"x" for i in range(256)} | {bytes(32): b"0"}
    tree = MerkleMap(32, comb.items())
    assert tree.depth() == 256
    for key, value in ((bytes(32), b"0"), ((1 << 255).to_bytes(32, "big"), b"x"), ((3).to_bytes(32, "big"), None)):
        assert verify_get(tree.root(), key, roundtrip(tree.prove_get(key)[1])) == value
    with pytest.raises(ValueError):
        MerkleMap(33)


def test_the_verifier_runs_none_of_the_trees_code() -> None:
    """What a light client imports: the verifier, the proof types and the hashes, never the tree that proves."""
    tree = ast.parse(Path(str(verifier.__file__)).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "exchange.commitments.hashing", "exchange.commitments.proofs"}
