"""The browser's verifier (node/console/static/proofs.js, WebCrypto SHA-256) run under Node.js on the
proofs the Python tree makes, sound and corrupted: for every case it returns the same entries as
exchange/commitments/verify.py or refuses with the same reason."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from exchange.commitments.hashing import value_digest
from exchange.commitments.proofs import Branch, Hidden, LeafDigest, Node, Proof, ProofError
from exchange.commitments.tree import MerkleMap
from exchange.commitments.verify import verify_first, verify_get, verify_range

VERIFIER = Path(__file__).resolve().parents[3] / "node" / "console" / "static" / "proofs.js"
NODE = shutil.which("node")
pytestmark = [pytest.mark.process, pytest.mark.skipif(NODE is None, reason="needs Node.js to run proofs.js")]

SCRIPT = """
import { verifyRange, verifyGet, verifyFirst } from %s;
import { readFileSync } from "node:fs";
const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const unhex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const out = [];
for (const c of JSON.parse(readFileSync(0, "utf8"))) {
  try {
    const [root, lo, hi, proof] = [hex(c.root), hex(c.lo), hex(c.hi), hex(c.proof)];
    let found;
    if (c.op === "get") {
      const v = await verifyGet(root, lo, proof);
      found = v === null ? [] : [[lo, v]];
    } else if (c.op === "first") found = await verifyFirst(root, lo, hi, c.n, proof);
    else found = await verifyRange(root, lo, hi, proof);
    out.push({ entries: found.map(([k, v]) => [unhex(k), unhex(v)]) });
  } catch (e) {
    if (e.failure === undefined) throw e;
    out.push({ failure: e.failure });
  }
}
process.stdout.write(JSON.stringify(out));
"""


def _python(case: dict) -> dict:
    root, lo, hi, data = (bytes.fromhex(case[k]) for k in ("root", "lo", "hi", "proof"))
    try:
        proof = Proof.decode(data)
        if case["op"] == "get":
            value = verify_get(root, lo, proof)
            return {"entries": [] if value is None else [[lo.hex(), value.hex()]]}
        entries = verify_first(root, lo, hi, case["n"], proof) if case["op"] == "first" else verify_range(root, lo, hi, proof)
        return {"entries": [[k.hex(), v.hex()] for k, v in entries]}
    except ProofError as refused:
        return {"failure": refused.failure.value}


def _case(op: str, root: bytes, lo: bytes, hi: bytes, proof: bytes, n: int = 0) -> dict:
    return {"op": op, "root": root.hex(), "lo": lo.hex(), "hi": hi.hex(), "proof": proof.hex(), "n": n}


def _cases() -> list[dict]:
    rnd = random.Random(68)
    cases = []
    for key_bytes, size in ((3, 0), (3, 1), (3, 40), (8, 300)):
        tree = MerkleMap(key_bytes, ((rnd.randbytes(key_bytes), rnd.randbytes(rnd.randrange(0, 300))) for _ in range(size)))
        root, keys = tree.root(), [k for k, _ in tree.items()]
        for _ in range(8):
            key = rnd.choice(keys) if keys and rnd.random() < 0.6 else rnd.randbytes(key_bytes)
            cases.append(_case("get", root, key, key, tree.prove_get(key)[1].encode()))
            lo, hi = sorted((rnd.randbytes(key_bytes), rnd.randbytes(key_bytes)))
            cases.append(_case("range", root, lo, hi, tree.prove_range(lo, hi)[1].encode()))
            n = rnd.randrange(1, 25)
            low, high = bytes(key_bytes), b"\xff" * key_bytes
            cases.append(_case("first", root, low, high, tree.prove_first(low, high, n)[1].encode(), n))
    tree = MerkleMap(3, ((bytes([0, 0, p]), b"lvl") for p in range(0, 60, 4)))
    root = tree.root()
    lo, hi = bytes([0, 0, 10]), bytes([0, 0, 30])
    data = tree.prove_range(lo, hi)[1].encode()
    for i in range(len(data)):                              # every single-bit corruption of one proof
        for bit in range(8):
            cases.append(_case("range", root, lo, hi, data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]))
    cases += [_case("range", root[:5] + bytes([root[5] ^ 4]) + root[6:], lo, hi, data),
              _case("range", root, lo, bytes([0, 0, 40]), data),                        # a narrower proof: incomplete
              _case("range", root, hi, lo, data),                                       # lo > hi
              _case("first", root, bytes(3), b"\xff" * 3, tree.prove_first(bytes(3), b"\xff" * 3, 3)[1].encode(), 5),
              _case("get", root, bytes([0, 0, 5]), bytes([0, 0, 5]), tree.prove_get(bytes([0, 0, 4]))[1].encode())]
    forged: list[Node] = [Branch(2, b"\x20", Hidden(b"h" * 32), Hidden(b"i" * 32)),
                          Branch(9, b"\x00", Hidden(b"h" * 32), Hidden(b"i" * 32)),
              Branch(30, b"\x00" * 4, Hidden(b"h" * 32), Hidden(b"i" * 32)),
              Branch(3, b"\x00", Branch(2, b"\x00", Hidden(b"h" * 32), Hidden(b"i" * 32)), Hidden(b"j" * 32)),
              Branch(0, b"", LeafDigest(b"\x80\x00\x00", b"d" * 32), Hidden(b"j" * 32)),
              Branch(0, b"", LeafDigest(b"\x00\x00", b"d" * 32), Hidden(b"j" * 32)), Hidden(b"h" * 32)]
    cases += [_case("range", b"r" * 32, b"\xf0\x00\x00", b"\xff\xff\xff", Proof(node).encode()) for node in forged]
    comb = MerkleMap(32, [((1 << i).to_bytes(32, "big"), b"x") for i in range(256)] + [(bytes(32), b"0")])
    for key in (bytes(32), (1 << 200).to_bytes(32, "big"), (5).to_bytes(32, "big")):   # 256 branches deep
        cases.append(_case("get", comb.root(), key, key, comb.prove_get(key)[1].encode()))
    single = MerkleMap(3, [(b"abc", b"v")])                 # the leaf asked for, its value withheld
    cases.append(_case("get", single.root(), b"abc", b"abc", Proof(LeafDigest(b"abc", value_digest(b"v"))).encode()))
    return cases


def test_the_browser_verifier_agrees_with_the_python_one_on_every_case() -> None:
    cases = _cases()
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", SCRIPT % json.dumps(VERIFIER.as_uri())],
                          input=json.dumps(cases), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout)
    expected = [_python(case) for case in cases]
    assert len(answers) == len(cases)
    disagree = [(case, got, want) for case, got, want in zip(cases, answers, expected) if got != want]
    assert not disagree, disagree[:3]
    failures = {e["failure"] for e in expected if "failure" in e}
    assert {"malformed", "root_mismatch", "incomplete", "bad_query", "value_unasked", "bad_prefix", "bit_order",
            "off_path", "wrong_key_length", "value_missing"} <= failures
    assert sum(bool(e.get("entries")) for e in expected) > 30
