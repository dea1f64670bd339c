// The REST side: every trading endpoint, typed answers, Retry-After honoured (see the Python client's
// docstring for the same contract). With a Signer the program signs every operation itself.
import { Op, Signer, SignedTx } from "./signing.js";

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly field?: string,
              readonly retryAfter?: number, readonly body?: unknown) {
    super(`${status} ${code}: ${message}${field ? ` (field ${field})` : ""}`);
  }
  get retryable(): boolean { return this.status === 429 || this.status === 503; }
}

export class Rejected extends Error {
  constructor(readonly what: string, readonly reason: string | null, readonly answer: unknown) {
    super(`${what} rejected: ${reason}`);
  }
}

export type Json = Record<string, any>;

export interface Answer {
  final: boolean; status: number; body: Json; reason?: string | null; order?: Json | null; trades?: Json[];
}

export interface ClientOptions { token?: string; signer?: Signer; account?: string; retries?: number; }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const EXAMPLES: Record<string, string> = { price: "100.25", qty: "0.5" };

/** Prices and quantities are decimal strings: a JS number is refused here, before anything is signed or sent,
 * with what to send instead (a float cannot hold 0.1 exactly; the node refuses numbers too). */
export function decimalString(value: unknown, field: string): string {
  if (typeof value === "string") return value;
  const like = `a decimal string like "${EXAMPLES[field] ?? "12.34"}"`;
  if (typeof value === "number" || typeof value === "bigint") {
    throw new TypeError(`${field} must be ${like}, not a number (${String(value)}): send String(value) or the text the user typed`);
  }
  throw new TypeError(`${field} must be ${like}, not ${value === null ? "null" : typeof value}`);
}

export class Client {
  readonly apiUrl: string;
  private chainIdCache?: string;
  constructor(apiUrl: string, readonly options: ClientOptions = {}) { this.apiUrl = apiUrl.replace(/\/$/, ""); }

  async request(method: string, path: string, body?: unknown): Promise<[number, Json]> {
    const retries = this.options.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(this.apiUrl + path, {
        method,
        headers: { "Content-Type": "application/json",
          ...(this.options.token ? { Authorization: `Bearer ${this.options.token}` } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const data = (await response.json().catch(() => ({}))) as Json;
      if (response.status < 400) return [response.status, data];
      const error = data?.error ?? {};
      const retryAfter = response.headers.get("Retry-After");
      const failure = new ApiError(response.status, error.code ?? "http_error", error.message ?? "", error.field,
        retryAfter ? Number(retryAfter) : undefined, data);
      if (!failure.retryable || attempt >= retries) throw failure;
      await sleep(Math.min(failure.retryAfter ?? 1, 30) * 1000);
    }
  }

  async get(path: string): Promise<Json> { return (await this.request("GET", path))[1]; }
  status(): Promise<Json> { return this.get("/status"); }
  async chainId(): Promise<string> {
    this.chainIdCache ??= (await this.status()).chain_id;
    if (!this.chainIdCache) throw new ApiError(503, "no_chain_yet", "the node has not joined a network yet");
    return this.chainIdCache;
  }
  book(market: string, depth = 25): Promise<Json> { return this.get(`/book/${market}?depth=${depth}`); }
  async trades(market: string, limit = 100): Promise<Json[]> { return (await this.get(`/trades/${market}?limit=${limit}`)).trades; }
  async candles(market: string, interval = "1m"): Promise<Json[]> {
    return (await this.get(`/candles/${market}?interval=${interval}`)).candles;
  }
  async order(id: string): Promise<Json> { return (await this.get(`/orders/${id}`)).order; }
  async orders(status?: string, limit = 100): Promise<Json[]> {
    const account = this.options.signer?.tradesFor ?? this.options.account;
    const query = new URLSearchParams({ limit: String(limit), ...(account ? { account } : {}), ...(status ? { status } : {}) });
    return (await this.get(`/orders?${query}`)).orders;
  }

  /** The account's order holding `clientId` (final, or pending on this node); [] when none does. */
  async ordersByClientId(clientId: string): Promise<Json[]> {
    const account = this.options.signer?.tradesFor ?? this.options.account ?? "default";   // never another account's
    const query = new URLSearchParams({ client_id: clientId, account });
    return (await this.get(`/orders?${query}`)).orders;
  }

  /** Cancel the account's order holding `clientId` (ApiError `unknown_client_id` when none does). */
  async cancelByClientId(clientId: string, wait = 2): Promise<Answer> {
    const [found] = await this.ordersByClientId(clientId);
    if (!found) throw new ApiError(404, "unknown_client_id", `no open or recent order holds client id ${clientId}`, "client_id");
    return this.cancel(found.id, found.market, wait);
  }

  async fills(market: string, from = 0, cursor?: string, limit = 1000): Promise<{ trades: Json[]; next_cursor: string | null }> {
    const account = this.options.signer?.tradesFor ?? this.options.account ?? "default";
    const query = new URLSearchParams({ market, from: String(from), limit: String(limit), ...(cursor ? { cursor } : {}) });
    return this.get(`/accounts/${account}/fills?${query}`) as Promise<any>;
  }
  /** Every kept trade of a market from `from` (block time, ms), through the cursors. */
  async tradeHistory(market: string, from = 0): Promise<Json[]> {
    const found: Json[] = [];
    for (let cursor: string | null = null; ;) {
      const page = await this.get(`/trades/${market}?from=${from}&limit=10000${cursor ? `&cursor=${cursor}` : ""}`);
      found.push(...page.trades);
      cursor = page.next_cursor;
      if (!cursor) return found;
    }
  }
  async peers(): Promise<Json[]> { return (await this.get("/peers")).peers; }
  validators(): Promise<Json> { return this.get("/validators"); }
  routing(): Promise<Json> { return this.get("/routing"); }
  async rpc(service: string, payload: unknown, timeout?: number): Promise<Json> {
    return (await this.request("POST", `/rpc/${service}`, { payload, ...(timeout !== undefined ? { timeout } : {}) }))[1];
  }

  private async signed(op: Op): Promise<{ signed: SignedTx }> {
    return { signed: await this.options.signer!.sign(await this.chainId(), [op]) };
  }
  private plain(fields: Json): Json {
    return { ...fields, ...(this.options.account ? { account: this.options.account } : {}) };
  }

  async place(market: string, side: "buy" | "sell", qty: string, price: string | null = null,
              extra: { type?: string; stp?: string; until?: number; wait?: number; clientId?: string;
                       triggerPrice?: string; reduceOnly?: boolean } = {}): Promise<Answer> {
    qty = decimalString(qty, "qty");
    price = price === null ? null : decimalString(price, "price");
    const op: Op = { op: "new", market, side, type: extra.type ?? "limit", price, qty, stp: extra.stp ?? null,
      ...(extra.until !== undefined ? { until: extra.until } : {}),
      ...(extra.clientId !== undefined ? { client_id: extra.clientId } : {}),
      ...(extra.triggerPrice !== undefined ? { trigger_price: decimalString(extra.triggerPrice, "price") } : {}),
      ...(extra.reduceOnly ? { reduce_only: true } : {}) };
    const { op: _kind, ...fields } = op;
    const body = this.options.signer ? await this.signed(op)
      : this.plain(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== null)));
    const [status, data] = await this.request("POST", `/orders?wait=${extra.wait ?? 2}`, body);
    return { final: Boolean(data.final), status, body: data, reason: data.reason, order: data.order, trades: data.trades };
  }

  async cancel(id: string, market?: string, wait = 2): Promise<Answer> {
    let body: unknown;
    if (this.options.signer) {
      body = await this.signed({ op: "cancel", market: market ?? (await this.order(id)).market, order_id: id });
    }
    const [status, data] = await this.request("DELETE", `/orders/${id}?wait=${wait}`, body);
    if (data.cancel?.status === "rejected") throw new Rejected("cancel", data.cancel.reason, data);
    return { final: Boolean(data.final), status, body: data, reason: data.cancel?.reason, order: data.order };
  }

  async replace(id: string, qty: string, price: string | null, market?: string, wait = 2): Promise<Answer> {
    if (!this.options.signer) throw new Error("replace needs the account's key (a Signer)");
    qty = decimalString(qty, "qty");
    price = price === null ? null : decimalString(price, "price");
    const op: Op = { op: "replace", market: market ?? (await this.order(id)).market, order_id: id, price, qty };
    const [status, data] = await this.request("POST", `/orders/batch?wait=${wait}`, await this.signed(op));
    const item = data.results[0];
    if (item.error) throw new ApiError(422, item.error.code, item.error.message, item.error.field, undefined, data);
    if (item.result?.outcome === "rejected") throw new Rejected("replace", item.result.reason, item);
    return { final: Boolean(item.final), status, body: item, reason: item.reason, order: item.order };
  }

  /** New orders, cancels and replaces in one transaction the chain runs all or none of: the results, the atomic
   * marker's first (its result.reason names the operation that refused the batch and why). */
  async atomic(ops: Op[], wait = 2): Promise<Json[]> {
    const body = this.options.signer
      ? { signed: await this.options.signer.sign(await this.chainId(), [{ op: "atomic" }, ...ops]) }
      : this.plain({ atomic: true, orders: ops });
    const [, data] = await this.request("POST", `/orders/batch?wait=${wait}`, body);
    return data.results;
  }

  async cancelAll(market: string | null = null, side: "buy" | "sell" | null = null, wait = 2): Promise<Answer> {
    const body = this.options.signer ? await this.signed({ op: "cancel_all", market, side })
      : this.plain({ ...(market ? { market } : {}), ...(side ? { side } : {}) });
    const [status, data] = await this.request("POST", `/orders/cancel-all?wait=${wait}`, body);
    return { final: Boolean(data.final), status, body: data, reason: data.cancel_all?.reason };
  }

  /** Approve (or re-scope) an agent key (64 hex) for this account: markets (null: all), operations (place,
   * cancel, replace), a notional cap per order in its quote asset, an expiry (block time, ms). */
  async approveAgent(agent: string, scope: { markets?: string[] | null; operations?: string[]; cap?: string | null;
                                             expires?: number | null } = {}, wait = 2): Promise<Answer> {
    const operations = (scope.operations ?? ["place", "cancel", "replace"]).join(",");
    const op: Op = { op: "approve_agent", agent, markets: scope.markets ? scope.markets.join(",") : null, operations,
      cap: scope.cap ?? null, expires: scope.expires ?? null };
    const body = this.options.signer ? await this.signed(op)
      : this.plain({ agent, markets: scope.markets ?? null, operations: operations.split(","), cap: scope.cap ?? null,
                     expires: scope.expires ?? null });
    return this.agentCall("approve_agent", "POST", `/agents?wait=${wait}`, body);
  }

  /** Revoke an agent key of this account. */
  async revokeAgent(agent: string, wait = 2): Promise<Answer> {
    const body = this.options.signer ? await this.signed({ op: "revoke_agent", agent }) : undefined;
    const account = !this.options.signer && this.options.account ? `&account=${this.options.account}` : "";
    return this.agentCall("revoke_agent", "DELETE", `/agents/${agent}?wait=${wait}${account}`, body);
  }

  async agents(account?: string): Promise<Json[]> {
    const who = account ?? this.options.signer?.tradesFor ?? this.options.account;
    return (await this.get(`/agents${who ? `?account=${who}` : ""}`)).agents;
  }

  private async agentCall(what: string, method: string, path: string, body: unknown): Promise<Answer> {
    try {
      const [status, data] = await this.request(method, path, body);
      return { final: Boolean(data.final), status, body: data, reason: data[what]?.reason };
    } catch (error) {
      const answer = error instanceof ApiError ? (error.body as Json | undefined) : undefined;
      if (error instanceof ApiError && error.status === 409 && answer?.[what]) {
        throw new Rejected(what, answer[what].reason, answer);
      }
      throw error;
    }
  }

  /** The dead-man's switch: all the account's orders are cancelled `seconds` from now unless this is called
   * again first; null disarms it. */
  async cancelAfter(seconds: number | null, wait = 2): Promise<Answer> {
    const at = seconds === null ? null : Date.now() + Math.round(seconds * 1000);
    const body = this.options.signer ? await this.signed({ op: "schedule_cancel", at })
      : this.plain(seconds === null ? { at: null } : { after: seconds });
    const [status, data] = await this.request("POST", `/orders/cancel-after?wait=${wait}`, body);
    return { final: Boolean(data.final), status, body: data, reason: data.schedule_cancel?.reason };
  }
}
