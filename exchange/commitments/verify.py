"""Checks a proof against nothing but a trusted root: what a light client runs on a node's answer.

It shares only the hashes and the proof types with the tree (never the tree's code), so a bug in building
or proving cannot make a wrong answer pass. Each branch says which key bits lie under it; the verifier
carries those bits down and refuses a node that contradicts them, a hidden subtree that could hold a key
of the range, a leaf in the range without its value, and any proof whose hashes do not lead to the root.
"""
from __future__ import annotations

from exchange.commitments.hashing import EMPTY_ROOT, MAX_KEY_BYTES, branch_hash, leaf_hash, value_digest
from exchange.commitments.proofs import Branch, Failure, Hidden, LeafDigest, LeafValue, Node, Proof, ProofError

Entry = tuple[bytes, bytes]


def verify_range(root: bytes, lo: bytes, hi: bytes, proof: Proof) -> list[Entry]:
    """Every (key, value) with lo <= key <= hi under `root`, in key order, and no other: raises ProofError."""
    if len(lo) != len(hi) or not 0 < len(lo) <= MAX_KEY_BYTES or lo > hi:
        raise ProofError(Failure.BAD_QUERY, "lo and hi must be keys of one length, lo <= hi")
    if proof.node is None:
        if root != EMPTY_ROOT:
            raise ProofError(Failure.ROOT_MISMATCH, "an empty tree proved against a non-empty root")
        return []
    walk = _Walk(len(lo), int.from_bytes(lo, "big"), int.from_bytes(hi, "big"))
    if walk.hash(proof.node, 0, 0) != root:
        raise ProofError(Failure.ROOT_MISMATCH, "the proof does not hash to the trusted root")
    return walk.entries


def verify_get(root: bytes, key: bytes, proof: Proof) -> bytes | None:
    """The value of `key` under `root`, or None when the proof shows it absent: raises ProofError."""
    entries = verify_range(root, key, key, proof)
    return entries[0][1] if entries else None


def verify_first(root: bytes, lo: bytes, hi: bytes, n: int, proof: Proof) -> list[Entry]:
    """The n smallest entries in [lo, hi] (fewer only when the range holds fewer): none smaller is left out.

    The proof covers [lo, k] where k is the n-th key it reveals in the range (hi when it reveals fewer), so a
    proof that stops early or skips a key is refused like any incomplete range proof."""
    if n < 1:
        raise ProofError(Failure.BAD_QUERY, "n must be at least 1")
    if len(lo) != len(hi) or lo > hi:
        raise ProofError(Failure.BAD_QUERY, "lo and hi must be keys of one length, lo <= hi")
    keys = sorted(k for k in _revealed_keys(proof.node) if lo <= k <= hi)
    cut = keys[n - 1] if len(keys) >= n else hi
    return verify_range(root, lo, cut, proof)


def _revealed_keys(node: Node | None) -> list[bytes]:
    stack, keys = [node], []
    while stack:
        item = stack.pop()
        if isinstance(item, LeafValue):
            keys.append(item.key)
        elif isinstance(item, Branch):
            stack += (item.left, item.right)
    return keys


class _Walk:
    """One verification: the query, the entries found so far (in key order: left subtrees first)."""

    def __init__(self, key_bytes: int, lo: int, hi: int) -> None:
        self.key_bytes, self.bits, self.lo, self.hi = key_bytes, key_bytes * 8, lo, hi
        self.entries: list[Entry] = []

    def hash(self, node: Node, known: int, nbits: int) -> bytes:
        """The hash of `node`, whose keys all begin with the `nbits` bits `known` (where its parent hangs it)."""
        if isinstance(node, Hidden):
            free = self.bits - nbits
            if known << free <= self.hi and ((known + 1) << free) - 1 >= self.lo:
                raise ProofError(Failure.INCOMPLETE, f"a hidden subtree under {nbits} known bits overlaps the range")
            return node.hash
        if isinstance(node, (LeafValue, LeafDigest)):
            if len(node.key) != self.key_bytes:
                raise ProofError(Failure.WRONG_KEY_LENGTH, f"a {len(node.key)}-byte key among {self.key_bytes}-byte keys")
            key = int.from_bytes(node.key, "big")
            if key >> (self.bits - nbits) != known:
                raise ProofError(Failure.OFF_PATH, "a leaf hangs where its key does not lead")
            inside = self.lo <= key <= self.hi
            if isinstance(node, LeafDigest):
                if inside:
                    raise ProofError(Failure.VALUE_MISSING, "a leaf in the range without its value")
                return leaf_hash(node.key, node.digest)
            if not inside:
                raise ProofError(Failure.VALUE_UNASKED, "a leaf outside the range with its value")
            self.entries.append((node.key, node.value))
            return leaf_hash(node.key, value_digest(node.value))
        above = self._branch_bits(node, known, nbits)       # one frame per level: checked, then recursed
        left = self.hash(node.left, above << 1, node.bit + 1)
        right = self.hash(node.right, (above << 1) | 1, node.bit + 1)
        return branch_hash(node.bit, node.prefix, left, right)

    def _branch_bits(self, node: Branch, known: int, nbits: int) -> int:
        """The first `bit` bits of every key under the branch, once its bit and prefix fit where it hangs."""
        bit = node.bit
        if not nbits <= bit < self.bits:
            raise ProofError(Failure.BIT_ORDER, f"a branch on bit {bit} below a path of {nbits} bits")
        if len(node.prefix) != (bit + 7) // 8:
            raise ProofError(Failure.BAD_PREFIX, f"a prefix of {len(node.prefix)} bytes for bit {bit}")
        above = int.from_bytes(node.prefix, "big") if node.prefix else 0
        spare = len(node.prefix) * 8 - bit
        if above & ((1 << spare) - 1):
            raise ProofError(Failure.BAD_PREFIX, "prefix bits set past the split bit")
        above >>= spare                                  # the first `bit` bits of every key below
        if above >> (bit - nbits) != known:
            raise ProofError(Failure.OFF_PATH, "a branch hangs where its prefix does not lead")
        return above
