// What a browser peer says and checks, with no page state: hex, the signed-order text (docs/signed-orders.md),
// the session proof (node/browser/binding.py), the account key kept in IndexedDB.
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
    const sig = hex(await crypto.subtle.sign({ name: "Ed25519" }, account.keys.privateKey, bytes));
    const txId = hex(await sha256(bytes)).slice(0, 32);
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

  return { hex, unhex, sha256, checkWelcome, signOrder, accountKey, importKeyFile };
})();
