// The /ws market data stream as any client uses it: subscribe, check every sequence number and book
// checksum, resubscribe on a gap or mismatch, reconnect with backoff when the socket drops.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(text) {
  let crc = 0xffffffff;
  for (const byte of new TextEncoder().encode(text)) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// A client's copy of one book subscription: price string -> quantity string per side.
export class LocalBook {
  constructor(depth) {
    this.depth = depth;
    this.bids = new Map();
    this.asks = new Map();
  }

  apply(message) {
    if (message.type === "snapshot") { this.bids.clear(); this.asks.clear(); }
    for (const side of ["bids", "asks"]) {
      for (const [price, qty] of message[side]) {
        if (Number(qty) === 0) this[side].delete(price); else this[side].set(price, qty);
      }
    }
    return this.checksum() === message.checksum;
  }

  levels(side) {
    const rows = [...this[side].entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
    return side === "bids" ? rows.reverse() : rows;
  }

  // CRC-32 of the best 25 levels interleaved: bid price, bid qty, ask price, -ask qty, ...
  checksum() {
    const bids = this.levels("bids").slice(0, 25), asks = this.levels("asks").slice(0, 25), parts = [];
    for (let i = 0; i < Math.max(bids.length, asks.length); i++) {
      if (i < bids.length) parts.push(bids[i][0], bids[i][1]);
      if (i < asks.length) parts.push(asks[i][0], "-" + asks[i][1]);
    }
    return crc32(parts.join(":"));
  }
}

export class Stream {
  constructor(url, { onInfo, onState, onError } = {}) {
    this.url = url;
    this.onInfo = onInfo || (() => {});
    this.onState = onState || (() => {});
    this.onError = onError || (() => {});
    this.subs = new Map();        // key -> {key, request, handler, chan, seq}
    this.byChan = new Map();
    this.asked = new Map();       // req -> the subscription that request was for
    this.lastReq = 0;
    this.token = null;
    this.resyncs = 0;
    this.retry = 500;
    this.connect();
  }

  connect() {
    this.onState("connecting");
    this.ws = new WebSocket(this.url);
    this.ws.onopen = () => {
      this.retry = 500;
      this.onState("open");
      if (this.token) this.send({ event: "auth", token: this.token });
      for (const sub of this.subs.values()) this.request(sub);
    };
    this.ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.ws.onclose = (event) => {
      this.onState("closed", event.code, event.reason);
      this.byChan.clear();
      this.asked.clear();
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  send(message) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  authenticate(token) {
    this.token = token;
    if (token) this.send({ event: "auth", token });
  }

  // handler(message) gets the snapshot and every update in order.
  subscribe(key, request, handler) {
    const sub = { key, request, handler, chan: null, seq: -1 };
    this.subs.set(key, sub);
    this.request(sub);
  }

  unsubscribe(key) {
    const sub = this.subs.get(key);
    if (!sub) return;
    this.subs.delete(key);
    if (sub.chan !== null) {
      this.byChan.delete(sub.chan);
      this.send({ event: "unsubscribe", chan: sub.chan });
    }
  }

  request(sub) {
    sub.chan = null;
    sub.seq = -1;
    const req = ++this.lastReq;
    this.asked.set(req, sub);
    this.send({ event: "subscribe", ...sub.request, req });
  }

  resync(sub) {
    this.resyncs += 1;
    this.byChan.delete(sub.chan);
    this.send({ event: "unsubscribe", chan: sub.chan });
    this.request(sub);
  }

  receive(message) {
    if (message.event) return this.event(message);
    const sub = this.byChan.get(message.chan);
    if (!sub) return;                               // an unsubscribed channel's last messages
    if (message.seq !== sub.seq + 1) return this.resync(sub);
    sub.seq = message.seq;
    if (sub.handler(message) === false) this.resync(sub);   // e.g. a book checksum mismatch
  }

  event(message) {
    if (message.event === "info") return this.onInfo(message);
    const sub = this.asked.get(message.req);
    this.asked.delete(message.req);
    if (message.event === "subscribed") {
      if (sub && this.subs.get(sub.key) === sub && sub.chan === null) {
        sub.chan = message.chan;
        this.byChan.set(message.chan, sub);
      } else {
        this.send({ event: "unsubscribe", chan: message.chan });   // asked for by a request since replaced
      }
    } else if (message.event === "error") {
      this.onError(message);
    }
  }
}
