// Signing transactions the way every node checks them (docs/signed-orders.md): Ed25519 over a short UTF-8
// text, rebuilt here without the node's code. WebCrypto, so the same code runs in Node.js (20+) and browsers.

export const DOMAIN = "exchange-node/tx/v1";

export type Op =
  | { op: "new"; market: string; side: "buy" | "sell"; type?: string; price?: string | null; qty: string;
      stp?: string | null; until?: number | null; client_id?: string | null; trigger_price?: string | null;
      reduce_only?: boolean }
  | { op: "cancel"; market: string; order_id: string }
  | { op: "replace"; market: string; order_id: string; price?: string | null; qty: string }
  | { op: "cancel_all"; market?: string | null; side?: "buy" | "sell" | null }
  | { op: "schedule_cancel"; at: number | null }
  | { op: "approve_agent"; agent: string; markets: string | null; operations: string; cap: string | null;
      expires: number | null }
  | { op: "revoke_agent"; agent: string }
  | { op: "atomic" };

export interface SignedTx {
  chain_id: string; account: string; nonce: string; expires: number; ops: Op[]; sig: string;
  for?: string;   // an agent's transaction: the account it trades for
}

const dash = (value: unknown): string => (value === null || value === undefined ? "-" : String(value));

export function opLine(op: Op): string {
  switch (op.op) {
    case "new": {
      const line = `new ${op.market} ${op.side} ${op.type ?? "limit"} ${dash(op.price)} ${op.qty} ${dash(op.stp)}`;
      const timed = op.until === null || op.until === undefined ? line : `${line} until=${op.until}`;
      const named = op.client_id === null || op.client_id === undefined ? timed : `${timed} cid=${op.client_id}`;
      const triggered = op.trigger_price === null || op.trigger_price === undefined ? named
        : `${named} trigger=${op.trigger_price}`;
      return op.reduce_only ? `${triggered} reduce_only` : triggered;
    }
    case "cancel": return `cancel ${op.market} ${op.order_id}`;
    case "replace": return `replace ${op.market} ${op.order_id} ${dash(op.price)} ${op.qty}`;
    case "cancel_all": return `cancel_all ${dash(op.market)} ${dash(op.side)}`;
    case "schedule_cancel": return `schedule_cancel ${dash(op.at)}`;
    case "approve_agent":
      return `approve_agent ${op.agent} ${dash(op.markets)} ${op.operations} ${dash(op.cap)} ${dash(op.expires)}`;
    case "revoke_agent": return `revoke_agent ${op.agent}`;
    case "atomic": return "atomic";
  }
}

export function signedText(chainId: string, account: string, nonce: string, expires: number, ops: Op[],
                           actingFor?: string): Uint8Array {
  const lines = [DOMAIN, `chain=${chainId}`, `account=${account}`, ...(actingFor ? [`for=${actingFor}`] : []),
    `nonce=${nonce}`, `expires=${expires}`, ...ops.map(opLine)];
  return new TextEncoder().encode(lines.join("\n"));
}

export const hex = (bytes: ArrayBuffer | Uint8Array): string =>
  Array.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(text: string): Uint8Array {
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error("not hex");
  return Uint8Array.from(text.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

export async function txId(text: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", text)).slice(0, 32);
}

export function orderId(transactionId: string, index: number): string {
  return transactionId.slice(0, 30) + index.toString(16).padStart(2, "0");
}

/** Nonces that only go up: microseconds since the epoch, at least one past the last handed out. Give
 * `load`/`save` (a file, localStorage) so a restarted program never reuses one. */
export class NonceSource {
  private last: bigint;
  constructor(private readonly save?: (value: string) => void, load?: () => string | null) {
    this.last = BigInt(load?.() ?? "0");
  }
  next(): string {
    const now = BigInt(Date.now()) * 1000n;
    this.last = now > this.last ? now : this.last + 1n;
    this.save?.(this.last.toString());
    return `n${this.last}`;
  }
}

const PKCS8_ED25519 = fromHex("302e020100300506032b657004220420");

export class Signer {
  /** `actingFor`: an agent key's account (the one it trades for); unset for an account's own key. */
  actingFor?: string;
  private constructor(private readonly key: CryptoKey, readonly account: string, readonly nonces: NonceSource) {}

  /** The account whose orders this key places: its own, or the one an agent key acts for. */
  get tradesFor(): string { return this.actingFor ?? this.account; }

  /** From an agent key file's text as `exchange-node agent add --out FILE` writes it (JSON: seed, account). */
  static async agentFromFile(text: string, nonces = new NonceSource()): Promise<Signer> {
    const data = JSON.parse(text);
    const signer = await Signer.fromSeed(data.seed, nonces);
    signer.actingFor = data.account;
    return signer;
  }

  /** From the key's 32-byte seed (64 hex characters). */
  static async fromSeed(seedHex: string, nonces = new NonceSource()): Promise<Signer> {
    const seed = fromHex(seedHex);
    if (seed.length !== 32) throw new Error("an Ed25519 seed is 32 bytes (64 hex)");
    const pkcs8 = new Uint8Array([...PKCS8_ED25519, ...seed]);
    const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", key);
    const account = hex(Uint8Array.from(atob((jwk.x ?? "").replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)));
    return new Signer(key, account, nonces);
  }

  /** From a key file as `exchange-node account new NAME` writes it (DATA_DIR/accounts/NAME.pem: PKCS#8 PEM). */
  static async fromPem(pem: string, nonces = new NonceSource()): Promise<Signer> {
    const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    const prefix = hex(der.slice(0, PKCS8_ED25519.length));
    if (der.length !== PKCS8_ED25519.length + 32 || prefix !== hex(PKCS8_ED25519)) {
      throw new Error("not an unencrypted PKCS#8 Ed25519 key (as `exchange-node account new` writes one)");
    }
    return Signer.fromSeed(hex(der.slice(PKCS8_ED25519.length)), nonces);
  }

  static async generate(nonces = new NonceSource()): Promise<Signer> {
    return Signer.fromSeed(hex(crypto.getRandomValues(new Uint8Array(32))), nonces);
  }

  /** The `{"signed": ...}` body's transaction, expiring `ttlMs` from now. */
  async sign(chainId: string, ops: Op[], ttlMs = 60_000): Promise<SignedTx> {
    const nonce = this.nonces.next();
    const expires = Date.now() + ttlMs;
    const text = signedText(chainId, this.account, nonce, expires, ops, this.actingFor);
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, this.key, text);
    return { chain_id: chainId, account: this.account, nonce, expires, ops, sig: hex(sig),
             ...(this.actingFor ? { for: this.actingFor } : {}) };
  }
}
