// Checks a state proof against nothing but a trusted root, in the browser (WebCrypto SHA-256): the same
// rules, in the same order and with the same reasons, as exchange/commitments/verify.py, which
// tests/unit/commitments/test_js_verifier.py checks it against under Node.js.
//
// A proof is msgpack: [1, node] or [1, nil]; node = [0, hash] | [1, key, value] | [2, key, digest] |
// [3, bit, prefix, left, right]. Only the canonical encoding is read (shortest ints, bin for bytes).

const MAX_KEY_BYTES = 32;
const MAX_BITS = MAX_KEY_BYTES * 8;
const MAX_PROOF_BYTES = 16 << 20;
const HIDDEN = 0, LEAF_VALUE = 1, LEAF_DIGEST = 2, BRANCH = 3;

export class ProofError extends Error {
  constructor(failure, detail) {
    super(`${failure}: ${detail}`);
    this.failure = failure;          // one of the reasons in exchange/commitments/proofs.py Failure
    this.detail = detail;
  }
}

// ------------------------------------------------------------------ canonical msgpack, the subset proofs use

class Reader {
  constructor(bytes) { this.bytes = bytes; this.at = 0; }
  need(n) {
    if (this.at + n > this.bytes.length) throw new ProofError("malformed", "truncated");
    const start = this.at;
    this.at += n;
    return start;
  }
  byte() { return this.bytes[this.need(1)]; }
  uint(bytes) { let v = 0; for (let i = 0; i < bytes; i++) v = v * 256 + this.byte(); return v; }
  // one item: null, a non-negative int, a Uint8Array or an array; anything else is not a proof's
  item(depth) {
    if (depth > MAX_BITS + 2) throw new ProofError("malformed", "nested deeper than any key has bits");
    const tag = this.byte();
    if (tag <= 0x7f) return tag;
    if (tag === 0xc0) return null;
    if (tag === 0xcc) return this.minimal(this.uint(1), 0x80);
    if (tag === 0xcd) return this.minimal(this.uint(2), 0x100);
    if (tag === 0xce) return this.minimal(this.uint(4), 0x10000);
    if (tag >= 0x90 && tag <= 0x9f) return this.array(tag & 0x0f, depth);
    if (tag === 0xdc) return this.array(this.minimal(this.uint(2), 16), depth);
    if (tag === 0xc4) return this.bin(this.uint(1));
    if (tag === 0xc5) return this.bin(this.minimal(this.uint(2), 0x100));
    if (tag === 0xc6) return this.bin(this.minimal(this.uint(4), 0x10000));
    throw new ProofError("malformed", `msgpack type 0x${tag.toString(16)} is not in a proof`);
  }
  minimal(value, least) {
    if (value < least) throw new ProofError("malformed", "not the canonical encoding");
    return value;
  }
  array(length, depth) {
    const items = [];
    for (let i = 0; i < length; i++) items.push(this.item(depth + 1));
    return items;
  }
  bin(length) { const start = this.need(length); return this.bytes.subarray(start, start + length); }
}

const isBytes = (v) => v instanceof Uint8Array;
const isInt = (v) => typeof v === "number";

function digest(v) {
  if (!isBytes(v) || v.length !== 32) throw new ProofError("malformed", "a hash is not 32 bytes");
  return v;
}

function key(v) {
  if (!isBytes(v) || v.length < 1 || v.length > MAX_KEY_BYTES) {
    throw new ProofError("malformed", `a key is not 1..${MAX_KEY_BYTES} bytes`);
  }
  return v;
}

function node(raw) {
  if (!Array.isArray(raw) || raw.length === 0 || !isInt(raw[0])) throw new ProofError("malformed", "a node is not [kind, ...]");
  const kind = raw[0];
  if (kind === HIDDEN && raw.length === 2) return { kind, hash: digest(raw[1]) };
  if (kind === LEAF_VALUE && raw.length === 3 && isBytes(raw[2])) return { kind, key: key(raw[1]), value: raw[2] };
  if (kind === LEAF_DIGEST && raw.length === 3) return { kind, key: key(raw[1]), digest: digest(raw[2]) };
  if (kind === BRANCH && raw.length === 5 && isInt(raw[1]) && isBytes(raw[2])) {
    if (raw[1] >= MAX_BITS) throw new ProofError("malformed", "a split bit past any key");
    return { kind, bit: raw[1], prefix: raw[2], left: node(raw[3]), right: node(raw[4]) };
  }
  throw new ProofError("malformed", `no node of kind ${kind} with ${raw.length} fields`);
}

/** The proof's tree (null for the empty tree) from its bytes; throws ProofError("malformed") otherwise. */
export function decodeProof(bytes) {
  if (bytes.length > MAX_PROOF_BYTES) throw new ProofError("malformed", `${bytes.length} bytes, at most ${MAX_PROOF_BYTES}`);
  const reader = new Reader(bytes);
  const raw = reader.item(0);
  if (reader.at !== bytes.length) throw new ProofError("malformed", "bytes after the proof");
  if (!Array.isArray(raw) || raw.length !== 2 || raw[0] !== 1) throw new ProofError("malformed", "not [version 1, node]");
  return raw[1] === null ? null : node(raw[1]);
}

// ------------------------------------------------------------------ hashes (exchange/commitments/hashing.py)

async function sha256(...parts) {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const joined = new Uint8Array(length);
  let at = 0;
  for (const p of parts) { joined.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

const EMPTY = Uint8Array.of(2);
const valueDigest = (value) => sha256(Uint8Array.of(3), value);
const leafHash = (k, d) => sha256(Uint8Array.of(0), k, d);
const branchHash = (bit, prefix, left, right) => sha256(Uint8Array.of(1, bit >> 8, bit & 0xff), prefix, left, right);

const toBig = (bytes) => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ------------------------------------------------------------------ the walk (exchange/commitments/verify.py)

// Two passes: `check` walks the proof left subtree first and throws the first thing wrong (the order the
// Python verifier finds it in), collecting the entries; `digest` then hashes the checked tree, both subtrees
// of a branch at once (WebCrypto digests are asynchronous; awaiting them one by one would serialise them).
class Walk {
  constructor(keyBytes, lo, hi) {
    this.keyBytes = keyBytes; this.bits = BigInt(keyBytes * 8); this.lo = lo; this.hi = hi; this.entries = [];
  }

  check(n, known, nbits) {
    if (n.kind === HIDDEN) {
      const free = this.bits - nbits;
      if ((known << free) <= this.hi && ((known + 1n) << free) - 1n >= this.lo) {
        throw new ProofError("incomplete", `a hidden subtree under ${nbits} known bits overlaps the range`);
      }
      return;
    }
    if (n.kind === LEAF_VALUE || n.kind === LEAF_DIGEST) {
      if (n.key.length !== this.keyBytes) {
        throw new ProofError("wrong_key_length", `a ${n.key.length}-byte key among ${this.keyBytes}-byte keys`);
      }
      const k = toBig(n.key);
      if ((k >> (this.bits - nbits)) !== known) throw new ProofError("off_path", "a leaf hangs where its key does not lead");
      const inside = this.lo <= k && k <= this.hi;
      if (n.kind === LEAF_DIGEST && inside) throw new ProofError("value_missing", "a leaf in the range without its value");
      if (n.kind === LEAF_VALUE && !inside) throw new ProofError("value_unasked", "a leaf outside the range with its value");
      if (n.kind === LEAF_VALUE) this.entries.push([n.key, n.value]);
      return;
    }
    const bit = BigInt(n.bit);
    if (!(nbits <= bit && bit < this.bits)) throw new ProofError("bit_order", `a branch on bit ${n.bit} below a path of ${nbits} bits`);
    if (n.prefix.length !== Math.ceil(n.bit / 8)) {
      throw new ProofError("bad_prefix", `a prefix of ${n.prefix.length} bytes for bit ${n.bit}`);
    }
    let above = toBig(n.prefix);
    const spare = BigInt(n.prefix.length * 8) - bit;
    if (above & ((1n << spare) - 1n)) throw new ProofError("bad_prefix", "prefix bits set past the split bit");
    above >>= spare;
    if ((above >> (bit - nbits)) !== known) throw new ProofError("off_path", "a branch hangs where its prefix does not lead");
    this.check(n.left, above << 1n, bit + 1n);
    this.check(n.right, (above << 1n) | 1n, bit + 1n);
  }
}

async function digestOf(n) {
  if (n.kind === HIDDEN) return n.hash;
  if (n.kind === LEAF_DIGEST) return leafHash(n.key, n.digest);
  if (n.kind === LEAF_VALUE) return leafHash(n.key, await valueDigest(n.value));
  const [left, right] = await Promise.all([digestOf(n.left), digestOf(n.right)]);
  return branchHash(n.bit, n.prefix, left, right);
}

function checkQuery(lo, hi) {
  if (lo.length !== hi.length || lo.length < 1 || lo.length > MAX_KEY_BYTES || toBig(lo) > toBig(hi)) {
    throw new ProofError("bad_query", "lo and hi must be keys of one length, lo <= hi");
  }
}

async function rangeOf(root, lo, hi, tree) {
  checkQuery(lo, hi);
  if (tree === null) {
    if (!equal(root, await sha256(EMPTY))) throw new ProofError("root_mismatch", "an empty tree proved against a non-empty root");
    return [];
  }
  const walk = new Walk(lo.length, toBig(lo), toBig(hi));
  walk.check(tree, 0n, 0n);
  if (!equal(await digestOf(tree), root)) throw new ProofError("root_mismatch", "the proof does not hash to the trusted root");
  return walk.entries;
}

/** Every [key, value] with lo <= key <= hi under `root` (Uint8Arrays), in key order: throws ProofError. */
export async function verifyRange(root, lo, hi, proofBytes) {
  return rangeOf(root, lo, hi, decodeProof(proofBytes));
}

/** The value of `key` under `root`, or null when the proof shows it absent: throws ProofError. */
export async function verifyGet(root, keyBytes, proofBytes) {
  const entries = await verifyRange(root, keyBytes, keyBytes, proofBytes);
  return entries.length ? entries[0][1] : null;
}

/** The n smallest entries in [lo, hi] (fewer only when the range holds fewer), none smaller left out. */
export async function verifyFirst(root, lo, hi, n, proofBytes) {
  const tree = decodeProof(proofBytes);
  if (n < 1) throw new ProofError("bad_query", "n must be at least 1");
  checkQuery(lo, hi);
  const [low, high] = [toBig(lo), toBig(hi)];
  const keys = [];
  const stack = tree === null ? [] : [tree];
  while (stack.length) {
    const item = stack.pop();
    if (item.kind === LEAF_VALUE) keys.push(item.key);
    else if (item.kind === BRANCH) stack.push(item.left, item.right);
  }
  const inRange = keys.map(toBig).filter((k) => low <= k && k <= high).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const cut = inRange.length >= n ? inRange[n - 1] : high;
  const cutBytes = new Uint8Array(lo.length);
  for (let i = lo.length - 1, v = cut; i >= 0; i--, v >>= 8n) cutBytes[i] = Number(v & 0xffn);
  return rangeOf(root, lo, cutBytes, tree);
}
