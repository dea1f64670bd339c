// What a browser peer says and checks, with no page state: hex, the signed-order text (docs/signed-orders.md),
// the session proof (node/browser/binding.py), certified headers against the validator set proven from the
// genesis (node/light/verify.py's rules), the account key kept in IndexedDB.
"use strict";

const P2P = (() => {
  const enc = new TextEncoder();
  const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const unhex = (text) => {
    if (typeof text !== "string" || !/^([0-9a-f]{2})*$/i.test(text)) throw new Error("not hex");
    return new Uint8Array(text.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const PROOF_DOMAIN = enc.encode("exchange-node/browser-session/1\n");

  // Why a node's welcome is refused, or null when it proves the node: its key hashes to the id we expected
  // (when we expected one), it signed the certificate we dialled with (a man in the middle relaying the node's
  // proof has a certificate of its own) and our nonce.
  async function checkWelcome(welcome, { nonce, dialledHash, expectedId }) {
    let key;
    try {
      key = unhex(welcome.public_key);
    } catch {
      return "the node sent no valid key";
    }
    const id = hex((await sha256(key)).slice(0, 20));
    if (welcome.node_id !== id) return "the node id is not its key's";
    if (expectedId && id !== expectedId) return `not the node's key: expected node ${expectedId.slice(0, 12)}…, ` +
      `this endpoint proves ${id.slice(0, 12)}… (a man in the middle?)`;
    if (welcome.cert_sha256 !== dialledHash) return "the node signed another certificate than the one this " +
      "browser met: someone in between holds the certificate (a man in the middle)";
    const message = new Uint8Array([...PROOF_DOMAIN, ...unhex(dialledHash), ...nonce]);
    const verifyKey = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, verifyKey, unhex(welcome.sig), message);
    return ok ? null : "the session proof does not verify with the node key (a man in the middle?)";
  }

  // The signed transaction text and body, as docs/signed-orders.md says, for one new limit order.
  async function signOrder(account, { chainId, market, side, price, qty, ttlMs = 60_000 }) {
    const nonce = "p" + hex(crypto.getRandomValues(new Uint8Array(8)));
    const expires = Date.now() + ttlMs;
    const text = ["exchange-node/tx/v1", `chain=${chainId}`, `account=${account.hex}`, `nonce=${nonce}`,
      `expires=${expires}`, `new ${market} ${side} limit ${price} ${qty} -`].join("\n");
    const bytes = enc.encode(text);
    const [signature, digest] = await Promise.all([crypto.subtle.sign({ name: "Ed25519" }, account.keys.privateKey,
      bytes), sha256(bytes)]);
    const sig = hex(signature);
    const txId = hex(digest).slice(0, 32);
    return {
      txId, orderId: txId.slice(0, 30) + "00",
      signed: { chain_id: chainId, account: account.hex, nonce, expires,
        ops: [{ op: "new", market, side, type: "limit", price, qty, stp: null }], sig },
    };
  }

  // The account key: made once, non-extractable, kept in IndexedDB (every tab of this origin shares it).
  const DB = "exchange-node-browser-peer";
  function openDb() {
    return new Promise((resolve, reject) => {
      const open = indexedDB.open(DB, 1);
      open.onupgradeneeded = () => open.result.createObjectStore("keys");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }
  function idb(db, mode, act) {
    return new Promise((resolve, reject) => {
      const tx = db.transaction("keys", mode);
      const request = act(tx.objectStore("keys"));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
    });
  }
  async function accountKey() {
    const db = await openDb();
    let keys = await idb(db, "readonly", (s) => s.get("account"));
    let made = false;
    if (!keys) {
      keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      // two tabs racing: `add` refuses the second, which then reads the first's key
      try {
        await idb(db, "readwrite", (s) => s.add(keys, "account"));
        made = true;
      } catch {
        keys = await idb(db, "readonly", (s) => s.get("account"));
      }
    }
    const raw = await crypto.subtle.exportKey("raw", keys.publicKey);
    return { keys, hex: hex(raw), made, extractable: keys.privateKey.extractable };
  }
  async function importKeyFile(pem) {
    const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    const privateKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    // the public key of an imported PKCS#8 Ed25519 key: its last 32 bytes are the seed, so derive via JWK
    const jwkKey = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", jwkKey);
    const publicKey = await crypto.subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x: jwk.x }, { name: "Ed25519" },
      true, ["verify"]);
    const db = await openDb();
    await idb(db, "readwrite", (s) => s.put({ privateKey, publicKey }, "account"));
  }

  // --- canonical msgpack (exchange/chain/codec.py): lists, ints, str, bytes; decoding also maps, floats ----
  function encode(value, out = []) {
    const push = (...b) => out.push(...b);
    const len = (n, small, b8, b16, b32, smallMax) => {
      if (n <= smallMax && small !== null) push(small | n);
      else if (n < 0x100 && b8 !== null) push(b8, n);
      else if (n < 0x10000) push(b16, n >> 8, n & 0xff);
      else push(b32, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    };
    if (value === null) push(0xc0);
    else if (Array.isArray(value)) {
      len(value.length, 0x90, null, 0xdc, 0xdd, 15);
      for (const item of value) encode(item, out);
    } else if (typeof value === "string") {
      const bytes = enc.encode(value);
      len(bytes.length, 0xa0, 0xd9, 0xda, 0xdb, 31);
      push(...bytes);
    } else if (value instanceof Uint8Array) {
      len(value.length, null, 0xc4, 0xc5, 0xc6, -1);
      push(...value);
    } else if (Number.isSafeInteger(value) && value >= 0) {
      if (value < 0x80) push(value);
      else if (value < 0x100) push(0xcc, value);
      else if (value < 0x10000) push(0xcd, value >> 8, value & 0xff);
      else if (value < 0x100000000) push(0xce, value >>> 24, (value >> 16) & 0xff, (value >> 8) & 0xff, value & 0xff);
      else {
        const big = BigInt(value);
        push(0xcf, ...Array.from({ length: 8 }, (_, i) => Number((big >> BigInt(56 - 8 * i)) & 0xffn)));
      }
    } else throw new Error(`cannot encode ${typeof value}`);
    return out;
  }
  const pack = (value) => new Uint8Array(encode(value));

  function decode(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let i = 0;
    const take = (n) => {
      if (i + n > bytes.length) throw new Error("truncated msgpack");
      const part = bytes.subarray(i, i + n);
      i += n;
      return part;
    };
    const uint = (n) => {
      const part = take(n);
      let v = 0n;
      for (const b of part) v = (v << 8n) | BigInt(b);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    };
    const list = (n) => Array.from({ length: n }, () => item());
    const map = (n) => new Map(Array.from({ length: n }, () => [item(), item()]));
    function item() {
      const t = take(1)[0];
      if (t < 0x80) return t;
      if (t < 0x90) return map(t & 0x0f);
      if (t < 0xa0) return list(t & 0x0f);
      if (t < 0xc0) return new TextDecoder().decode(take(t & 0x1f));
      if (t >= 0xe0) return t - 0x100;
      switch (t) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: case 0xc5: case 0xc6: return take(uint(1 << (t - 0xc4))).slice();
        case 0xca: { const v = view.getFloat32(i); take(4); return v; }
        case 0xcb: { const v = view.getFloat64(i); take(8); return v; }
        case 0xcc: case 0xcd: case 0xce: case 0xcf: return uint(1 << (t - 0xcc));
        case 0xd0: { const v = view.getInt8(i); take(1); return v; }
        case 0xd1: { const v = view.getInt16(i); take(2); return v; }
        case 0xd2: { const v = view.getInt32(i); take(4); return v; }
        case 0xd3: { const v = view.getBigInt64(i); take(8); return v; }
        case 0xd9: case 0xda: case 0xdb: return new TextDecoder().decode(take(uint(1 << (t - 0xd9))));
        case 0xdc: case 0xdd: return list(uint(2 << (t - 0xdc)));
        case 0xde: case 0xdf: return map(uint(2 << (t - 0xde)));
        default: throw new Error(`msgpack type 0x${t.toString(16)} is not used by the chain`);
      }
    }
    const value = item();
    if (i !== bytes.length) throw new Error("trailing bytes after msgpack");
    return value;
  }
  const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const concat = (...parts) => new Uint8Array(parts.flatMap((p) => [...p]));
  const same = (a, b) => a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length &&
    a.every((x, k) => x === b[k]);
  // sha256 over [domain, value], value given as its canonical bytes (codec.digest)
  const digestOf = (domain, valueBytes) => sha256(concat([0x92], pack(domain), valueBytes));
  const PRECOMMIT = 2;

  // The validator set that decides the chain's heights, proven from the genesis document (its hash is the chain
  // id the page is on). A set change (an epoch proof) needs its membership transaction read, which this page does
  // not do: headers past the first change are said to be unverified here, never taken as verified.
  async function provenSet(chainId, answer) {
    const genesisBytes = b64(answer.genesis);
    if (hex(await digestOf("exchange-node/chain-id/v2", genesisBytes)) !== chainId) {
      throw new Error("its genesis document does not hash to the chain id");
    }
    const genesis = decode(genesisBytes);
    if (!Array.isArray(genesis) || !Array.isArray(genesis[4])) throw new Error("its genesis document is malformed");
    const keys = [...genesis[4]].sort((a, b) => {
      for (let k = 0; k < Math.min(a.length, b.length); k++) if (a[k] !== b[k]) return a[k] - b[k];
      return a.length - b.length;
    });
    const hash = await digestOf("exchange-node/validators/v1", pack([0, keys]));
    const verifyKeys = await Promise.all(keys.map((key) => crypto.subtle.importKey("raw", key, { name: "Ed25519" },
      false, ["verify"])));
    const changedAt = answer.proofs?.length ? decode(b64(answer.proofs[0]))[0][0][1] : null;
    return { keys, verifyKeys, hash, n: keys.length, quorum: Math.floor(2 * keys.length / 3) + 1, changedAt };
  }

  // A header served with its commit, checked: of this chain, the commit for exactly this header, naming the
  // proven set, and a quorum of distinct members' valid PRECOMMIT signatures. Why not, or {height, signers}.
  async function checkHeader(set, chainId, headerText, commitText) {
    const headerBytes = b64(headerText);
    const header = decode(headerBytes);
    const commit = decode(b64(commitText));
    if (!Array.isArray(header) || header.length !== 9 || !Array.isArray(commit) || commit.length !== 4) {
      return { why: "a header or commit that does not decode" };
    }
    const [chain, height, , , , , validatorsHash] = header;
    const [commitHeight, round, blockId, sigs] = commit;
    if (chain !== chainId) return { why: `a header of another chain at height ${height}` };
    const id = await digestOf("exchange-node/header/v1", headerBytes);
    if (commitHeight !== height || !same(blockId, id)) return { why: `a commit for another block at height ${height}` };
    if (set.changedAt !== null && height > set.changedAt) return { height, unverified: true };
    if (!same(validatorsHash, set.hash)) return { why: `a header at height ${height} naming a validator set no proof gives` };
    const vote = pack(["exchange-node/vote/v1", chainId, PRECOMMIT, height, round, blockId]);
    const seen = new Set();
    for (const entry of Array.isArray(sigs) ? sigs : []) {
      const [index, sig] = entry;
      if (seen.has(index) || !(index < set.n)) return { why: `a commit at height ${height} with a signer twice or unknown` };
      if (!await crypto.subtle.verify({ name: "Ed25519" }, set.verifyKeys[index], sig, vote)) {
        return { why: `a forged signature (validator ${index}) on the header at height ${height}` };
      }
      seen.add(index);
    }
    if (seen.size < set.quorum) {
      return { why: `too few signatures on the header at height ${height}: ${seen.size} of the ${set.quorum} ` +
        `needed of ${set.n} validators` };
    }
    return { height, signers: seen.size };
  }

  return { hex, unhex, sha256, checkWelcome, signOrder, accountKey, importKeyFile, pack, decode, provenSet,
    checkHeader };
})();
