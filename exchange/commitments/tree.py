"""An authenticated ordered map: a compressed binary Merkle trie (crit-bit) over fixed-length byte keys.

Each branch splits on the first bit where the keys below it differ, so the shape, and with it the root,
is a function of the key/value set alone: any insertion order, a restore, a state sync all give the same
root. Keys stay in order (left is bit 0), so a range and its completeness can be proved; a path is at
most one branch per key bit, whatever keys an adversary picks. Writes mark their path dirty and `root()`
hashes again only the dirty nodes: a batch of writes costs the union of their paths, O(depth) each.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

from exchange.commitments.hashing import (EMPTY_ROOT, MAX_KEY_BYTES, bit_at, branch_hash, first_difference, leaf_hash,
                                          prefix_of, value_digest)
from exchange.commitments.proofs import Branch, Hidden, LeafDigest, LeafValue, Node, Proof

Entry = tuple[bytes, bytes]


class _Leaf:
    __slots__ = ("key", "value", "hash")

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
        self.hash: bytes | None = None


class _Branch:
    """Splits on `bit`; `prefix` is the first `bit` bits every key below shares (fixed while the branch lives)."""
    __slots__ = ("bit", "prefix", "left", "right", "hash")

    def __init__(self, bit: int, prefix: bytes, left: "_Node", right: "_Node") -> None:
        self.bit, self.prefix, self.left, self.right = bit, prefix, left, right
        self.hash: bytes | None = None


_Node = _Leaf | _Branch


class MerkleMap:
    """Keys of `key_bytes` bytes to byte values, with a root over them and proofs of any key or range."""

    def __init__(self, key_bytes: int, items: Iterable[Entry] = ()) -> None:
        if not 0 < key_bytes <= MAX_KEY_BYTES:
            raise ValueError(f"keys are 1..{MAX_KEY_BYTES} bytes, not {key_bytes}")
        self.key_bytes = key_bytes
        self._root: _Node | None = None
        self._size = 0
        self.update(dict(items))

    @classmethod
    def build(cls, key_bytes: int, items: Mapping[bytes, bytes]) -> "MerkleMap":
        """A tree of `items` built at once from the sorted keys (the same shape `update` would give)."""
        tree = cls(key_bytes)
        keys = sorted(items)
        for key in keys:
            tree._check(key)
        tree._root = tree._build(keys, items, 0, len(keys)) if keys else None
        tree._size = len(keys)
        return tree

    def __len__(self) -> int:
        return self._size

    def get(self, key: bytes) -> bytes | None:
        node = self._root
        while isinstance(node, _Branch):
            node = node.right if bit_at(key, node.bit) else node.left
        return node.value if node is not None and node.key == key else None

    def items(self, lo: bytes | None = None, hi: bytes | None = None) -> list[Entry]:
        """(key, value) in key order, lo <= key <= hi when given."""
        return list(self.iterate(lo, hi))

    def iterate(self, lo: bytes | None = None, hi: bytes | None = None) -> Iterator[Entry]:
        """(key, value) in key order within [lo, hi], visiting only the subtrees that can hold such keys."""
        bits = self.key_bytes * 8
        low = 0 if lo is None else int.from_bytes(lo, "big")
        high = (1 << bits) - 1 if hi is None else int.from_bytes(hi, "big")
        stack: list[tuple[_Node, int, int]] = [] if self._root is None else [(self._root, 0, 0)]
        while stack:
            node, known, nbits = stack.pop()
            free = bits - nbits
            if known << free > high or ((known + 1) << free) - 1 < low:
                continue
            if isinstance(node, _Leaf):
                if low <= int.from_bytes(node.key, "big") <= high:
                    yield node.key, node.value
                continue
            above = _prefix_bits(node)
            stack += ((node.right, (above << 1) | 1, node.bit + 1), (node.left, above << 1, node.bit + 1))

    # ------------------------------------------------------------------ writes

    def update(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Set each key to its value, or delete it for None (an absent key deleted is no change)."""
        for key, value in changes.items():
            self._check(key)
            if value is None:
                self._delete(key)
            else:
                self._insert(key, value)

    def _check(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != self.key_bytes:
            raise ValueError(f"keys are {self.key_bytes} bytes")

    def _insert(self, key: bytes, value: bytes) -> None:
        root = self._root
        if root is None:
            self._root, self._size = _Leaf(key, value), 1
            return
        path: list[_Branch] = []
        node = root
        while isinstance(node, _Branch):
            path.append(node)
            node = node.right if bit_at(key, node.bit) else node.left
        crit = first_difference(key, node.key)
        if crit is None:                       # present: a new value on the same path
            for branch in path:
                branch.hash = None
            node.value, node.hash = value, None
            return
        above = 0                              # the branches above the new split: those splitting before crit
        while above < len(path) and path[above].bit < crit:
            path[above].hash = None
            above += 1
        here = path[above] if above < len(path) else node
        fresh = _Leaf(key, value)
        prefix = prefix_of(key, crit)
        split = _Branch(crit, prefix, here, fresh) if bit_at(key, crit) else _Branch(crit, prefix, fresh, here)
        self._hang(path[above - 1] if above else None, here, split)
        self._size += 1

    def _delete(self, key: bytes) -> None:
        grand: _Branch | None = None
        parent: _Branch | None = None
        node = self._root
        while isinstance(node, _Branch):
            grand, parent = parent, node
            node = node.right if bit_at(key, node.bit) else node.left
        if node is None or node.key != key:
            return
        self._size -= 1
        if parent is None:
            self._root = None
            return
        sibling = parent.left if parent.right is node else parent.right
        self._hang(grand, parent, sibling)
        self._descend_dirty(key, sibling)

    def _hang(self, parent: _Branch | None, old: _Node, new: _Node) -> None:
        """Put `new` where `old` hung under `parent` (the root when no parent)."""
        if parent is None:
            self._root = new
        elif parent.right is old:
            parent.right = new
        else:
            parent.left = new

    def _descend_dirty(self, key: bytes, stop: _Node | None) -> None:
        """Forget the hashes on `key`'s path down to (not including) `stop`, or down to its leaf."""
        node = self._root
        while isinstance(node, _Branch) and node is not stop:
            node.hash = None
            node = node.right if bit_at(key, node.bit) else node.left

    def _build(self, keys: list[bytes], items: Mapping[bytes, bytes], start: int, end: int) -> _Node:
        if end - start == 1:
            return _Leaf(keys[start], items[keys[start]])
        crit = first_difference(keys[start], keys[end - 1])
        assert crit is not None                 # keys are distinct
        lo, hi = start, end - 1                 # the first key with bit `crit` set: all before it have it clear
        while lo < hi:
            mid = (lo + hi) // 2
            if bit_at(keys[mid], crit):
                hi = mid
            else:
                lo = mid + 1
        return _Branch(crit, prefix_of(keys[start], crit), self._build(keys, items, start, lo),
                       self._build(keys, items, lo, end))

    # ------------------------------------------------------------------ hashes and proofs

    def root(self) -> bytes:
        return EMPTY_ROOT if self._root is None else self._hash(self._root)

    def _hash(self, node: _Node) -> bytes:
        if node.hash is not None:
            return node.hash
        if isinstance(node, _Leaf):
            node.hash = leaf_hash(node.key, value_digest(node.value))
        else:
            node.hash = branch_hash(node.bit, node.prefix, self._hash(node.left), self._hash(node.right))
        return node.hash

    def depth(self) -> int:
        """Branches on the longest path (at most the key's bit length)."""
        deepest, stack = 0, [(self._root, 0)] if self._root is not None else []
        while stack:
            node, d = stack.pop()
            if isinstance(node, _Branch):
                stack += ((node.left, d + 1), (node.right, d + 1))
            else:
                deepest = max(deepest, d)
        return deepest

    def prove_range(self, lo: bytes, hi: bytes) -> tuple[list[Entry], Proof]:
        """The entries in [lo, hi] and the proof that they are all of them."""
        self._check(lo)
        self._check(hi)
        self.root()
        if self._root is None:
            return [], Proof(None)
        found: list[Entry] = []
        node = self._prove(self._root, 0, 0, int.from_bytes(lo, "big"), int.from_bytes(hi, "big"), found)
        return found, Proof(node)

    def prove_get(self, key: bytes) -> tuple[bytes | None, Proof]:
        entries, proof = self.prove_range(key, key)
        return (entries[0][1] if entries else None), proof

    def prove_first(self, lo: bytes, hi: bytes, n: int) -> tuple[list[Entry], Proof]:
        """The n smallest entries in [lo, hi] and the proof that none smaller is left out."""
        head = list(islice(self.iterate(lo, hi), n)) if n > 0 else []
        cut = head[-1][0] if len(head) == n and head else hi
        return self.prove_range(lo, cut)

    def _prove(self, node: _Node, known: int, nbits: int, lo: int, hi: int, found: list[Entry]) -> Node:
        free = self.key_bytes * 8 - nbits
        if known << free > hi or ((known + 1) << free) - 1 < lo:
            assert node.hash is not None
            return Hidden(node.hash)
        if isinstance(node, _Leaf):
            if lo <= int.from_bytes(node.key, "big") <= hi:
                found.append((node.key, node.value))
                return LeafValue(node.key, node.value)
            return LeafDigest(node.key, value_digest(node.value))
        above = _prefix_bits(node)
        left = self._prove(node.left, above << 1, node.bit + 1, lo, hi, found)
        right = self._prove(node.right, (above << 1) | 1, node.bit + 1, lo, hi, found)
        return Branch(node.bit, node.prefix, left, right)


def _prefix_bits(node: _Branch) -> int:
    """The first `bit` bits every key under the branch shares, as a number."""
    return int.from_bytes(node.prefix, "big") >> (len(node.prefix) * 8 - node.bit) if node.bit else 0
