"""The ordered Merkle map's shape is the key/value set's alone (any order of writes, deletes back to a set,
built at once), its reads agree with a dict, a batch hashes again only the paths it touched, and keys an
adversary picks cannot make a path longer than the key's bits."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.commitments import tree as tree_module
from exchange.commitments.hashing import EMPTY_ROOT
from exchange.commitments.tree import MerkleMap

KEY = 4
keys = st.binary(min_size=KEY, max_size=KEY)
values = st.binary(max_size=12)
mappings = st.dictionaries(keys, values, max_size=40)


@settings(max_examples=150, deadline=None)
@given(mappings, st.randoms(use_true_random=False))
def test_the_root_depends_only_on_the_set_not_the_order(items: dict[bytes, bytes], rnd: random.Random) -> None:
    entries = list(items.items())
    forward = MerkleMap(KEY, entries)
    rnd.shuffle(entries)
    shuffled = MerkleMap(KEY)
    for key, value in entries:          # one write at a time, roots taken in between (hashes cached midway)
        shuffled.update({key: value})
        shuffled.root()
    assert forward.root() == shuffled.root() == MerkleMap.build(KEY, items).root()
    assert forward.items() == sorted(items.items()) and len(forward) == len(items)


@settings(max_examples=150, deadline=None)
@given(mappings, mappings, st.randoms(use_true_random=False))
def test_deleting_back_to_a_set_gives_its_root(base: dict[bytes, bytes], extra: dict[bytes, bytes],
                                                rnd: random.Random) -> None:
    added = {k: v for k, v in extra.items() if k not in base}
    tree = MerkleMap(KEY, base.items())
    expected = tree.root()
    changed = {k: v + b"!" for k, v in list(base.items())[: len(base) // 2]}   # overwritten, then restored
    tree.update({**added, **changed})
    tree.root()
    order = list(added)
    rnd.shuffle(order)
    for key in order:
        tree.update({key: None})
        tree.root()
    tree.update({k: base[k] for k in changed})
    assert tree.root() == expected and tree.items() == sorted(base.items())


def test_an_empty_tree_has_the_empty_root_and_deleting_what_is_absent_changes_nothing() -> None:
    tree = MerkleMap(KEY)
    assert tree.root() == EMPTY_ROOT and tree.get(b"abcd") is None
    tree.update({b"abcd": b"1"})
    one = tree.root()
    tree.update({b"abce": None})
    assert tree.root() == one != EMPTY_ROOT
    tree.update({b"abcd": None})
    assert tree.root() == EMPTY_ROOT and len(tree) == 0


def test_get_and_ranges_agree_with_a_dict() -> None:
    rnd = random.Random(5)
    items = {rnd.randbytes(KEY): rnd.randbytes(3) for _ in range(500)}
    tree = MerkleMap(KEY, items.items())
    for key in list(items)[:100] + [rnd.randbytes(KEY) for _ in range(100)]:
        assert tree.get(key) == items.get(key)
    for _ in range(50):
        lo, hi = sorted((rnd.randbytes(KEY), rnd.randbytes(KEY)))
        assert tree.items(lo, hi) == sorted((k, v) for k, v in items.items() if lo <= k <= hi)


def test_keys_of_another_length_are_refused() -> None:
    with pytest.raises(ValueError):
        MerkleMap(KEY).update({b"abc": b"1"})
    with pytest.raises(ValueError):
        MerkleMap(0)


def test_a_batch_hashes_again_only_the_paths_it_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(7)
    tree = MerkleMap(16, ((rnd.randbytes(16), b"v") for _ in range(20_000)))
    tree.root()
    calls: list[int] = []
    real = tree_module.hash_branch

    def counted(head: bytes, left: bytes, right: bytes) -> bytes:
        calls.append(len(head))
        return real(head, left, right)

    monkeypatch.setattr(tree_module, "hash_branch", counted)
    batch = {rnd.randbytes(16): b"new" for _ in range(50)}
    tree.update(batch)
    tree.root()
    # each touched key dirties at most its own path (depth + 1 branches, one of them new)
    assert 0 < len(calls) <= len(batch) * (tree.depth() + 1)
    assert len(calls) < 20_000 // 10


def test_adversarial_keys_keep_the_depth_within_the_key_bits() -> None:
    """Keys sharing ever longer prefixes (the worst an adversary can pick) make a comb, one branch per bit:
    the depth is bounded by the key length, never by the number of keys."""
    bits = KEY * 8
    comb = {(1 << i).to_bytes(KEY, "big"): b"x" for i in range(bits)} | {bytes(KEY): b"0"}
    tree = MerkleMap(KEY, comb.items())
    assert tree.depth() == bits
    assert MerkleMap.build(KEY, comb).root() == tree.root()
    rnd = random.Random(3)
    crowded = MerkleMap(KEY, ((rnd.randbytes(KEY), b"") for _ in range(5_000)))
    assert crowded.depth() <= bits
