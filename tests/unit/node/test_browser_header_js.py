"""The browser page's header check (node/console/static/p2p-wire.js: its msgpack codec, the genesis set, each
commit's signatures in WebCrypto) run under Node.js on headers and commits the chain's own Python code makes,
sound and altered: it accepts exactly what node/light/verify.py accepts, and says why it refuses the rest."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from exchange.chain.types.blocks import PRECOMMIT, Header, vote_bytes
from exchange.chain.types.codec import pack
from exchange.chain.types.genesis import Genesis
from exchange.chain.types.validators import ValidatorSet
from node.light.verify import Proven, Refused, verified_header

WIRE = Path(__file__).resolve().parents[3] / "node" / "console" / "static" / "p2p-wire.js"
NODE = shutil.which("node")
pytestmark = [pytest.mark.process, pytest.mark.skipif(NODE is None, reason="needs Node.js to run p2p-wire.js")]

SCRIPT = """
const fs = require("fs");
globalThis.atob = (s) => Buffer.from(s, "base64").toString("binary");
eval(fs.readFileSync(process.argv[1], "utf8") + "; globalThis.P2P = P2P;");
(async () => {
  const input = JSON.parse(fs.readFileSync(0, "utf8"));
  const out = {};
  try {
    await P2P.provenSet(input.chain_id, { genesis: input.other_genesis, proofs: [] });
    out.other = "accepted";
  } catch (e) {
    out.other = e.message;
  }
  const set = await P2P.provenSet(input.chain_id, { genesis: input.genesis, proofs: [] });
  out.set = { n: set.n, quorum: set.quorum };
  out.cases = [];
  for (const c of input.cases) out.cases.push(await P2P.checkHeader(set, input.chain_id, c.header, c.commit));
  const changed = await P2P.provenSet(input.chain_id, { genesis: input.genesis, proofs: [input.change] });
  out.after_change = await P2P.checkHeader(changed, input.chain_id, input.cases[0].header, input.cases[0].commit);
  process.stdout.write(JSON.stringify(out));
})();
"""


def b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def test_the_page_accepts_what_the_light_client_accepts_and_names_the_rest() -> None:
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    publics = [bytes(k.verify_key) for k in keys]
    genesis = Genesis("page-test", 1_700_000_000_000, publics[0], tuple(publics))
    other = Genesis("another", 1_700_000_000_000, publics[0], tuple(publics))
    chain_id = genesis.chain_id
    validators = ValidatorSet(0, publics)
    by_key = {bytes(k.verify_key): k for k in keys}

    def header(height: int, vhash: bytes = validators.hash, chain: str = chain_id) -> Header:
        return Header(chain, height, 1_700_000_000_000 + height, bytes(32), publics[0], bytes([height % 256]) * 32, vhash,
                      bytes(32), None)

    def commit(h: Header, signers: list[int], round_: int = 0, block_id: bytes | None = None) -> list[Any]:
        block_id = h.id if block_id is None else block_id
        data = vote_bytes(chain_id, PRECOMMIT, h.height, round_, block_id)
        return [h.height, round_, block_id, [[i, by_key[validators.keys[i]].sign(data).signature] for i in signers]]

    sound = header(300)
    forged = commit(sound, [0, 1, 2])
    forged[3][1][1] = bytes([forged[3][1][1][0] ^ 1]) + forged[3][1][1][1:]
    twice = commit(sound, [0, 1, 2])
    twice[3].append(twice[3][0])
    cases = [
        ("sound", sound.wire(), commit(sound, [0, 1, 2, 3]), None),
        ("a quorum, not all", sound.wire(), commit(sound, [1, 2, 3], round_=2), None),
        ("too few", sound.wire(), commit(sound, [0, 1]), "too few signatures"),
        ("forged", sound.wire(), forged, "forged signature (validator 1)"),
        ("a signer twice", sound.wire(), twice, "a signer twice"),
        ("another block", sound.wire(), commit(sound, [0, 1, 2], block_id=header(301).id), "another block"),
        ("an unproven set", header(302, vhash=bytes(32)).wire(), commit(header(302, vhash=bytes(32)), [0, 1, 2]),
         "no proof gives"),
        ("another chain", header(303, chain="ab" * 32).wire(), commit(header(303, chain="ab" * 32), [0, 1, 2]),
         "another chain"),
    ]
    given = {"chain_id": chain_id, "genesis": b64(genesis.wire()), "other_genesis": b64(other.wire()),
             "cases": [{"header": b64(h), "commit": b64(c)} for _, h, c, _ in cases],
             "change": b64([[header(200).wire(), []], commit(header(200), [0, 1, 2])])}
    assert NODE is not None
    run = subprocess.run([NODE, "-e", SCRIPT, str(WIRE)], input=json.dumps(given), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["other"] == "its genesis document does not hash to the chain id"
    assert out["set"] == {"n": 4, "quorum": 3}
    assert out["after_change"] == {"height": 300, "unverified": True}, "past a set change: said, not taken"
    proven = Proven(genesis, ((1, validators),))
    for (name, h, c, why), page in zip(cases, out["cases"]):
        try:
            verified_header("n", proven, {"header": b64(h), "commit": b64(c)})
            python_accepts = True
        except Refused:
            python_accepts = False
        assert ("why" not in page) == python_accepts, (name, page)
        if why is None:
            assert page["height"] == h[1] and page["signers"] == len(c[3]), (name, page)
        else:
            assert why in page["why"], (name, page)
