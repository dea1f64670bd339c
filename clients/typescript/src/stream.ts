// The market data stream that survives its connection (same contract as the Python client's MarketStream):
// reconnect with jittered backoff, subscribe again, a book comes back as a "resnapshot" checked against the
// node's checksum, trades are delivered once each and in order (a longer gap filled from GET /trades).

export interface StreamEvent {
  kind: "snapshot" | "update" | "resnapshot" | "trades" | "disconnected" | "reconnected";
  channel?: "book" | "trades"; market?: string; bids?: string[][]; asks?: string[][]; trades?: any[]; detail?: string;
}

type SocketLike = {
  send(data: string): void; close(): void;
  onopen: ((ev: any) => void) | null; onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null; onerror: ((ev: any) => void) | null;
};
export type SocketFactory = new (url: string) => SocketLike;

/** Compare two non-negative decimal strings without floats. */
export function compareDecimal(a: string, b: string): number {
  const [ai, af = ""] = a.split("."), [bi, bf = ""] = b.split(".");
  const width = Math.max(af.length, bf.length);
  const x = BigInt(ai + af.padEnd(width, "0")), y = BigInt(bi + bf.padEnd(width, "0"));
  return x < y ? -1 : x > y ? 1 : 0;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32(text: string): number {
  let crc = 0xffffffff;
  for (const byte of new TextEncoder().encode(text)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export class LocalBook {
  sides: Record<"bids" | "asks", Map<string, string>> = { bids: new Map(), asks: new Map() };
  /** Fold a snapshot or update in; false when the copy does not match the node's checksum. */
  apply(message: any): boolean {
    if (message.type === "snapshot") this.sides = { bids: new Map(), asks: new Map() };
    for (const side of ["bids", "asks"] as const) {
      for (const [price, qty] of message[side] ?? []) {
        if (compareDecimal(qty, "0") === 0) this.sides[side].delete(price); else this.sides[side].set(price, qty);
      }
    }
    return this.checksum() === message.checksum;
  }
  levels(side: "bids" | "asks"): string[][] {
    const sign = side === "bids" ? -1 : 1;
    return [...this.sides[side].entries()].sort((a, b) => sign * compareDecimal(a[0], b[0]));
  }
  checksum(): number {
    const bids = this.levels("bids").slice(0, 25), asks = this.levels("asks").slice(0, 25);
    const parts: string[] = [];
    for (let i = 0; i < Math.max(bids.length, asks.length); i++) {
      if (i < bids.length) parts.push(bids[i][0], bids[i][1]);
      if (i < asks.length) parts.push(asks[i][0], "-" + asks[i][1]);
    }
    return crc32(parts.join(":"));
  }
}

class Subscription {
  seq = -1; hadData = false; seen = new Set<string>(); order: string[] = [];
  book?: LocalBook;
  constructor(readonly channel: "book" | "trades", readonly market: string, readonly depth?: number) {
    if (channel === "book") this.book = new LocalBook();
  }
  request(req: number): any {
    return { event: "subscribe", channel: this.channel, market: this.market, req,
      ...(this.depth !== undefined ? { depth: this.depth } : {}) };
  }
  remember(id: string): void {
    this.seen.add(id); this.order.push(id);
    if (this.order.length > 20_000) this.seen.delete(this.order.shift()!);
  }
}

export class MarketStream {
  reconnects = 0; backfills = 0; lastResumeMs: number | null = null;
  private subs: Subscription[] = [];
  private byChan = new Map<number, Subscription>();
  private socket: SocketLike | null = null;
  private closed = false;
  private droppedAt: number | null = null;
  private delay: number;

  constructor(readonly apiUrl: string, readonly onEvent: (event: StreamEvent) => void,
              readonly options: { WebSocket?: SocketFactory; backoffMs?: [number, number] } = {}) {
    this.delay = (options.backoffMs ?? [50, 5000])[0];
  }

  subscribeBook(market: string, depth = 25): void { this.subs.push(new Subscription("book", market, depth)); }
  subscribeTrades(market: string): void { this.subs.push(new Subscription("trades", market)); }

  start(): void {
    const Socket = this.options.WebSocket ?? (globalThis as any).WebSocket as SocketFactory;
    const socket = new Socket(this.apiUrl.replace(/^http/, "ws") + "/ws");
    this.socket = socket;
    let queue = Promise.resolve();
    socket.onopen = () => {
      this.byChan.clear();
      this.subs.forEach((sub, index) => { sub.seq = -1; socket.send(JSON.stringify(sub.request(index))); });
      if (this.droppedAt !== null) this.onEvent({ kind: "reconnected", detail: `after ${Date.now() - this.droppedAt} ms` });
      this.delay = (this.options.backoffMs ?? [50, 5000])[0];
    };
    socket.onmessage = (ev) => { queue = queue.then(() => this.handle(socket, JSON.parse(String(ev.data)))); };
    socket.onerror = () => {};
    socket.onclose = (ev) => {
      this.socket = null;
      if (this.closed) return;
      if (this.droppedAt === null) {
        this.droppedAt = Date.now(); this.reconnects++;
        this.onEvent({ kind: "disconnected", detail: `code ${ev?.code ?? "?"}` });
      }
      const [, most] = this.options.backoffMs ?? [50, 5000];
      setTimeout(() => this.start(), this.delay * (0.5 + Math.random()));
      this.delay = Math.min(most, this.delay * 2);
    };
  }

  /** Close the connection under the stream as a network failure would (it reconnects). */
  drop(): void { this.socket?.close(); }
  close(): void { this.closed = true; this.socket?.close(); }

  private async handle(socket: SocketLike, data: any): Promise<void> {
    if (data.event !== undefined) {
      if (data.event === "subscribed" && typeof data.req === "number") this.byChan.set(data.chan, this.subs[data.req]);
      return;
    }
    const sub = this.byChan.get(data.chan);
    if (!sub) return;
    if (data.seq !== sub.seq + 1 && data.type !== "snapshot") return this.resubscribe(socket, sub, data.chan);
    sub.seq = data.seq;
    if (sub.book) {
      if (!sub.book.apply(data)) return this.resubscribe(socket, sub, data.chan);
      const kind = data.type === "snapshot" && sub.hadData ? "resnapshot" : data.type;
      sub.hadData = true;
      this.resumed();
      this.onEvent({ kind, channel: "book", market: sub.market, bids: sub.book.levels("bids"), asks: sub.book.levels("asks") });
      return;
    }
    let trades: any[] = data.trades ?? [];
    if (data.type === "snapshot" && sub.seen.size && trades.length && !sub.seen.has(trades[0].id)) {
      const response = await fetch(`${this.apiUrl}/trades/${sub.market}?limit=10000`);
      trades = ((await response.json()) as any).trades;
      this.backfills++;
    }
    const fresh = trades.filter((trade) => !sub.seen.has(trade.id));
    fresh.forEach((trade) => sub.remember(trade.id));
    sub.hadData = true;
    this.resumed();
    if (fresh.length) this.onEvent({ kind: "trades", channel: "trades", market: sub.market, trades: fresh });
  }

  private resumed(): void {
    if (this.droppedAt !== null) { this.lastResumeMs = Date.now() - this.droppedAt; this.droppedAt = null; }
  }

  private resubscribe(socket: SocketLike, sub: Subscription, chan: number): void {
    this.byChan.delete(chan);
    sub.seq = -1;
    socket.send(JSON.stringify({ event: "unsubscribe", chan }));
    socket.send(JSON.stringify(sub.request(this.subs.indexOf(sub))));
  }
}
