"""An authenticated ordered map: a compressed binary Merkle trie (crit-bit) over fixed-length byte keys.

Each branch splits on the first bit where the keys below it differ, so the shape, and with it the root,
is a function of the key/value set alone: any insertion order, a restore, a state sync all give the same
root. Keys stay in order (left is bit 0), so a range and its completeness can be proved; a path is at
most one branch per key bit, whatever keys an adversary picks. Writes mark their path dirty and `root()`
hashes again only the dirty nodes: a batch of writes costs the union of their paths, O(depth) each.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from bisect import bisect_left
from itertools import islice
from operator import attrgetter

from exchange.commitments.hashing import (EMPTY_ROOT, MAX_KEY_BYTES, bit_at, branch_head, first_difference,
                                          hash_branch, hash_leaf, prefix_of, value_digest)
from exchange.commitments.proofs import Branch, Hidden, LeafDigest, LeafValue, Node, Proof

Entry = tuple[bytes, bytes]


class _Leaf:
    __slots__ = ("key", "value", "hash")

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
        self.hash: bytes | None = None


class _Branch:
    """Splits on `bit`; `prefix` is the first `bit` bits every key below shares (fixed while the branch lives).

    What a walk and a rehash need of those is kept ready: the byte and mask that test the bit, and the bytes the
    branch's hash starts with (`hashing.branch_head`), so neither is recomputed per visit."""
    __slots__ = ("bit", "prefix", "byte", "mask", "head", "left", "right", "hash")

    def __init__(self, bit: int, prefix: bytes, left: "_Node", right: "_Node") -> None:
        self.bit, self.prefix, self.left, self.right = bit, prefix, left, right
        self.byte, self.mask = bit >> 3, 0x80 >> (bit & 7)
        self.head = branch_head(bit, prefix)
        self.hash: bytes | None = None


_Node = _Leaf | _Branch
_BIT = attrgetter("bit")


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
            node = node.right if key[node.byte] & node.mask else node.left
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
        """Set each key to its value, or delete it for None (an absent key deleted, or a value set again, is no
        change)."""
        size = self.key_bytes
        for key, value in changes.items():
            if type(key) is not bytes or len(key) != size:
                raise ValueError(f"keys are {size} bytes")
            if value is None:
                self._delete(key)
            else:
                self._insert(key, value)

    def _check(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != self.key_bytes:
            raise ValueError(f"keys are {self.key_bytes} bytes")

    def _walk(self, key: bytes, path: list[_Branch]) -> _Node | None:
        """Fill `path` with `key`'s branches from the root and return the leaf the key leads to."""
        node = self._root
        append = path.append
        while isinstance(node, _Branch):
            append(node)
            node = node.right if key[node.byte] & node.mask else node.left
        return node

    def _insert(self, key: bytes, value: bytes) -> None:
        path: list[_Branch] = []
        node = self._walk(key, path)
        if node is None:
            self._root, self._size = _Leaf(key, value), 1
            return
        assert isinstance(node, _Leaf)
        if node.key == key:                    # present: a new value on the same path
            if node.value != value:
                for branch in path:
                    branch.hash = None
                node.value, node.hash = value, None
            return
        crit = first_difference(key, node.key)
        assert crit is not None
        above = bisect_left(path, crit, key=_BIT)  # the branches above the new split: those splitting before crit
        for branch in path[:above]:
            branch.hash = None
        here = path[above] if above < len(path) else node
        fresh = _Leaf(key, value)
        prefix = prefix_of(key, crit)
        split = _Branch(crit, prefix, here, fresh) if bit_at(key, crit) else _Branch(crit, prefix, fresh, here)
        self._hang(path[above - 1] if above else None, here, split)
        self._size += 1

    def _delete(self, key: bytes) -> None:
        path: list[_Branch] = []
        node = self._walk(key, path)
        if not isinstance(node, _Leaf) or node.key != key:
            return
        self._size -= 1
        if not path:
            self._root = None
            return
        parent = path.pop()
        for branch in path:                    # the branches above the one that goes
            branch.hash = None
        self._hang(path[-1] if path else None, parent, parent.left if parent.right is node else parent.right)

    def _hang(self, parent: _Branch | None, old: _Node, new: _Node) -> None:
        """Put `new` where `old` hung under `parent` (the root when no parent)."""
        if parent is None:
            self._root = new
        elif parent.right is old:
            parent.right = new
        else:
            parent.left = new

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
        return node.hash or _rehash(node)

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


def _rehash(node: _Node) -> bytes:
    """Hash `node` and every node under it whose hash a write forgot; the clean subtrees are not visited."""
    if isinstance(node, _Leaf):
        digest = hash_leaf(node.key, node.value)
    else:
        left, right = node.left, node.right
        digest = hash_branch(node.head, left.hash or _rehash(left), right.hash or _rehash(right))
    node.hash = digest
    return digest
