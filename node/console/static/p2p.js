// The browser peer: links over WebTransport to the node it is given and to others it learns from it, and over a
// WebRTC data channel to those it cannot dial (behind a NAT: the offer and answer go through a node it is linked
// to), proves each (P2P.checkWelcome), follows the book and the headers over every link, and sends the orders it
// signs over the link chosen (or the first up), again over another when a link goes before the answer. It makes
// no HTTP request.
"use strict";

const MARKET = "BTC-USD";
let WANT_LINKS = 2;               // the address may ask for more (#links=N)
const RTC_GATHER_MS = 3000;       // ms to gather our ICE candidates before the offer goes without the rest
const RTC_CONNECT_MS = 6000;      // ms for the data channel to open before the node is taken as unreachable
const PING_EVERY = 1000;          // ms: a link silent this long is pinged; silent for PING_DEAD it is taken as gone
const KEEPALIVE = 5000;           // ms: a request at least this often (the node closes a session silent for 10 s)
const PING_DEAD = 3000;
const $ = (id) => document.getElementById(id);

const state = {
  links: [],                      // {url, hashes: [{hash, expires}], expectedId, nodeId, state, why, ...}
  account: null,
  chainId: null,
  orders: new Map(),              // order id -> {side, price, qty, status, via, signed, txId}
  book: { bids: new Map(), asks: new Map(), from: null },
  height: 0,
  preferred: null,                // the node id orders go through when its link is up (a click on its row)
  proven: null,                   // a promise of the validator set proven from the genesis (P2P.provenSet)
  verified: null,                 // the newest header checked: {height, signers, n}
  verifyNote: null,
};

function render() {
  const rows = state.links.map((l) => `<tr data-state="${l.state}" data-node-id="${l.nodeId ?? l.expectedId ?? ""}" ` +
    `data-kind="${l.kind}"><td class="id">${l.nodeId ?? l.expectedId ?? "?"}</td><td class="id">${l.url}</td>` +
    `<td class="link-state">${l.state}</td><td class="link-why">${l.why ?? ""}</td></tr>`);
  $("links").tBodies[0].innerHTML = rows.join("");
  const active = activeLink();
  $("active-node").textContent = active ? active.nodeId : "no link up";
  $("chain-id").textContent = state.chainId ?? "-";
  $("height").textContent = String(state.height);
  renderVerified();
  const book = active ? active.book : null;
  const levels = [];
  if (book) {
    const asks = [...book.asks].sort((a, b) => Number(b[0]) - Number(a[0]));
    const bids = [...book.bids].sort((a, b) => Number(b[0]) - Number(a[0]));
    for (const [price, size] of asks) levels.push(`<tr class="ask"><td>${size}</td><td>${price}</td><td>ask</td></tr>`);
    for (const [price, size] of bids) levels.push(`<tr class="bid"><td>${size}</td><td>${price}</td><td>bid</td></tr>`);
  }
  $("book").tBodies[0].innerHTML = levels.join("");
  $("orders").tBodies[0].innerHTML = [...state.orders].map(([id, o]) => `<tr data-order-id="${id}" ` +
    `data-final-ms="${o.finalMs ?? ""}" data-sign-ms="${o.signMs ?? ""}" data-wire-ms="${o.wireMs ?? ""}">` +
    `<td class="id">` +
    `${id}</td><td>${o.side}</td><td>${o.price}</td><td>${o.qty}</td><td class="order-status">${o.status}</td>` +
    `<td class="id">${(o.via ?? "").slice(0, 12)}</td></tr>`).join("");
}

function renderVerified() {
  const v = state.verified;
  $("verified").textContent = v ? `verified at height ${v.height} by ${v.signers} of ${v.n} validators` +
    (state.verifyNote ? `; ${state.verifyNote}` : "") : (state.verifyNote ?? "not verified yet");
}

function activeLink() {
  const chosen = state.links.find((l) => l.state === "up" && l.nodeId === state.preferred);
  return chosen ?? state.links.find((l) => l.state === "up") ?? null;
}

// --- one link ---------------------------------------------------------------------------------------
class Link {
  constructor(url, hashes, expectedId, kind = "webtransport") {
    Object.assign(this, { url, hashes, expectedId, kind, nodeId: null, state: "dialling", why: null, req: 0,
      pending: new Map(), book: { bids: new Map(), asks: new Map() }, lastHeard: 0, lastSent: 0, buffer: "" });
  }

  async dial() {
    const now = Date.now();
    const usable = this.hashes.filter((h) => !h.expires || h.expires > now);
    if (!usable.length) {
      return this.fail("refused", `certificate expired (${new Date(Math.max(...this.hashes.map((h) => h.expires)))
        .toISOString()}): the node has not published a newer one`);
    }
    // one hash per attempt: the session then knows which certificate the endpoint served, which its proof must name
    let failures = 0;
    for (const { hash } of usable) {
      let transport;
      try {
        transport = new WebTransport(this.url, { serverCertificateHashes: [{ algorithm: "sha-256", value: P2P.unhex(hash) }] });
        await transport.ready;
      } catch {
        failures += 1;
        continue;
      }
      return this.open(transport, hash);
    }
    return this.fail("refused", failures ? "the endpoint's certificate does not match the hash given (or it has " +
      "expired), or nothing answers there" : "no certificate hash given");
  }

  async open(transport, hash) {
    this.transport = transport;
    transport.closed.then(() => this.lost("the node closed the session"), (e) => this.lost(`link lost: ${e.message ?? e}`));
    const stream = await transport.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    this.writer = writer;
    this.sendLine = (text) => writer.write(new TextEncoder().encode(text));
    this.closeTransport = () => transport.close();
    this.read(stream.readable.getReader());
    return this.prove(hash);
  }

  // A node we cannot dial: our offer goes through `relay` (a link up), the node answers with its candidates and
  // its DTLS fingerprint, which its proof must name. ICE uses our STUN answers from the relay's port only.
  async dialRtc(relay) {
    this.via = relay.nodeId;
    const server = new URL(relay.url);
    const pc = new RTCPeerConnection({ iceServers: [{ urls: `stun:${server.hostname}:${server.port}` }] });
    this.pc = pc;
    const channel = pc.createDataChannel("exchange-node", { ordered: true });
    await pc.setLocalDescription(await pc.createOffer());
    await Promise.race([new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      if (pc.iceGatheringState === "complete") resolve();
    }), sleep(RTC_GATHER_MS)]);
    // mDNS names (<uuid>.local) mean nothing to the node: only addresses go
    const sdp = pc.localDescription.sdp.split("\r\n").filter((l) => !/^a=candidate:.* [0-9a-f-]+\.local /.test(l))
      .join("\r\n");
    const answer = await relay.request({ event: "rtc_offer", to: this.expectedId, sdp });
    if (answer.error || answer.event === "error") {
      pc.close();
      return this.relayed(relay, `no WebRTC to this node (${answer.error?.msg ?? answer.msg})`);
    }
    const fingerprint = /^a=fingerprint:sha-256 ([0-9A-F:]+)/mi.exec(answer.sdp)?.[1].replaceAll(":", "").toLowerCase();
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const opened = await Promise.race([new Promise((resolve) => { channel.onopen = () => resolve(true); }),
      sleep(RTC_CONNECT_MS).then(() => false)]);
    if (!opened) {
      pc.close();
      return this.relayed(relay, "no direct path through the NATs (ICE found none: a symmetric NAT?)");
    }
    channel.onmessage = (event) => this.feed(typeof event.data === "string" ? event.data
      : new TextDecoder().decode(event.data));
    channel.onclose = () => this.lost("the data channel closed");
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") this.lost("the WebRTC connection went");
    });
    this.sendLine = async (text) => channel.send(text);
    this.closeTransport = () => pc.close();
    return this.prove(fingerprint ?? "");
  }

  // The node cannot be reached directly: its orders go through the relay, and the page says so.
  relayed(relay, why) {
    this.fail("relayed", `${why}: trading through ${relay.nodeId.slice(0, 12)}… (the relay), which reaches it`);
  }

  async prove(hash) {
    this.dialledHash = hash;
    const nonce = crypto.getRandomValues(new Uint8Array(32));
    const welcome = await this.request({ event: "hello", nonce: P2P.hex(nonce) });
    const why = await P2P.checkWelcome(welcome, { nonce, dialledHash: hash, expectedId: this.expectedId });
    if (why) {
      this.fail("refused", why);
      this.closeTransport();
      return;
    }
    this.nodeId = welcome.node_id;
    if (state.chainId && welcome.chain_id && welcome.chain_id !== state.chainId) {
      this.fail("refused", "this node is on another chain");
      this.closeTransport();
      return;
    }
    state.chainId ??= welcome.chain_id;
    // the set that signs headers, proven from the genesis (its hash is the chain id) by the first node up
    if (!state.proven) {
      const proving = this.request({ event: "chain" }).then((answer) => P2P.provenSet(state.chainId, answer));
      state.proven = proving;
      proving.catch((e) => {
        if (state.proven === proving) state.proven = null;
        this.refuse(`node ${this.nodeId.slice(0, 12)}… served a genesis it cannot prove: ${e.message ?? e}`);
      });
    }
    this.state = "up";
    this.lastHeard = Date.now();
    this.send({ event: "subscribe", channel: "book", market: MARKET, depth: 25 });
    this.send({ event: "headers" });
    this.pinger = setInterval(() => this.ping(), PING_EVERY);
    render();
    linked(this);
  }

  async read(reader) {
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.feed(dec.decode(value, { stream: true }));
      }
    } catch (e) {
      this.lost(`link lost: ${e.message ?? e}`);
    }
  }

  // The lines of one chunk, then one redraw (not one per line: a chunk often holds several book updates).
  feed(text) {
    this.buffer += text;
    let end, any = false;
    while ((end = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 1);
      if (line) {
        this.message(JSON.parse(line));
        any = true;
      }
    }
    if (any) render();
  }

  message(m) {
    this.lastHeard = Date.now();        // anything from the node shows it is there (headers come every block)
    if (m.req !== undefined && this.pending.has(m.req)) {
      m.receivedAt = performance.now();
      const [resolve] = this.pending.get(m.req);
      this.pending.delete(m.req);
      resolve(m);
      return;
    }
    if (m.event === "header") {
      state.height = Math.max(state.height, m.height);
      this.checkHeader(m);
    } else if (m.type === "snapshot") {
      this.book = { bids: new Map(m.bids.map((l) => [l[0], l[1]])), asks: new Map(m.asks.map((l) => [l[0], l[1]])) };
      // ms from opening the page to the first book shown (read by the benchmark)
      document.body.dataset.firstBookMs ??= String(performance.now());
    } else if (m.type === "update") {
      for (const side of ["bids", "asks"]) {
        for (const [price, size] of m[side] ?? []) {
          if (Number(size) === 0) this.book[side].delete(price);
          else this.book[side].set(price, size);
        }
      }
    }
  }

  // Each header is checked against the proven set; a node that serves one with forged or too few signatures
  // is named and its link refused.
  async checkHeader(m) {
    if (!m.header || !m.commit || !state.proven) return;
    let set;
    try {
      set = await state.proven;
    } catch {
      return;
    }
    const result = await P2P.checkHeader(set, state.chainId, m.header, m.commit)
      .catch((e) => ({ why: `a header that does not decode (${e.message ?? e})` }));
    if (this.state !== "up") return;
    if (result.why) return this.refuse(`node ${this.nodeId.slice(0, 12)}… served ${result.why}: refused`);
    if (result.unverified) state.verifyNote = `headers past height ${set.changedAt} are not verified here (the ` +
      "validator set changed; this page does not read set changes)";
    else if (!state.verified || result.height >= state.verified.height) {
      state.verified = { height: result.height, signers: result.signers, n: set.n };
    }
    renderVerified();       // only what changed: a full redraw per header and link would cost every block
  }

  refuse(why) {
    clearInterval(this.pinger);
    this.state = "refused";
    this.why = why;
    for (const [, [, reject]] of this.pending) reject(new Error(why));
    this.pending.clear();
    try { this.closeTransport(); } catch { /* already closed */ }
    render();
    resend();
    refillSoon();
  }

  send(body) {
    this.lastSent = Date.now();
    return this.sendLine(JSON.stringify(body) + "\n");
  }

  request(body) {
    const req = ++this.req;
    return new Promise((resolve, reject) => {
      this.pending.set(req, [resolve, reject]);
      this.send({ ...body, req }).catch((e) => {
        this.pending.delete(req);
        reject(e);
      });
    });
  }

  // A ping only when the node has been silent (a page following headers hears it every block) or the page has
  // asked nothing for KEEPALIVE: each ping costs the node a datagram in and one out.
  ping() {
    if (this.state !== "up") return;
    const now = Date.now();
    if (now - this.lastHeard > PING_DEAD) {
      this.lost("the node stopped answering");
      try { this.closeTransport(); } catch { /* already closed */ }
      return;
    }
    if (now - this.lastHeard < PING_EVERY && now - this.lastSent < KEEPALIVE) return;
    this.send({ event: "ping" }).catch(() => this.lost("link lost"));
  }

  fail(what, why) {
    this.state = what;
    this.why = why;
    render();
  }

  lost(why) {
    if (this.state === "refused" || this.state === "down") return;
    clearInterval(this.pinger);
    this.state = "down";
    this.why = why;
    for (const [, [, reject]] of this.pending) reject(new Error(why));
    this.pending.clear();
    render();
    resend();
    refillSoon();
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the set of links ---------------------------------------------------------------------------------
async function dial(url, hashes, expectedId, relay = null) {
  if (state.links.some((l) => l.url === url && l.state !== "down" && l.state !== "refused")) return;
  state.links = state.links.filter((l) => !(l.url === url && l.state === "down"));     // its old row
  const link = new Link(url, hashes, expectedId, relay ? "webrtc" : "webtransport");
  state.links.push(link);
  render();
  try {
    await (relay ? link.dialRtc(relay) : link.dial());
  } catch (e) {
    link.fail("refused", `could not open the session: ${e.message ?? e}`);
  }
}

async function linked(link) {
  // learn the other nodes from this one; link to more until WANT_LINKS are up
  const answer = await link.request({ event: "nodes" }).catch(() => null);
  if (!answer) return;
  for (const node of answer.nodes) {
    const up = state.links.filter((l) => l.state === "up" || l.state === "dialling").length;
    if (up >= WANT_LINKS) break;
    if (state.links.some((l) => (l.nodeId === node.node_id || l.expectedId === node.node_id) &&
      l.state !== "down")) continue;
    const hashes = node.cert_sha256.map((hash, i) => ({ hash, expires: node.cert_expires_ms?.[i] }));
    // a node nobody can dial (its dial-backs say so) is reached over WebRTC, the offer through this link
    if (node.webrtc && node.direct === false) dial(`webrtc:${node.node_id} via ${link.nodeId}`, hashes, node.node_id, link);
    else dial(node.webtransport, hashes, node.node_id);
  }
  resend();
}

// A link went: link again, to the nodes an up link names (fresh hashes: a restarted node has new certificates),
// else to the ones that went, waiting 1 s, then twice as long each time nothing came up, up to 30 s.
let refillDelay = 1000;
let refillTimer = null;
function refillSoon() {
  if (refillTimer !== null) return;
  refillTimer = setTimeout(() => {
    refillTimer = null;
    const up = state.links.filter((l) => l.state === "up");
    if (up.length >= WANT_LINKS) {
      refillDelay = 1000;
      return;
    }
    if (up.length) up.forEach(linked);
    else state.links.filter((l) => l.state === "down" && l.kind === "webtransport")
      .forEach((l) => dial(l.url, l.hashes, l.nodeId ?? l.expectedId));
    refillDelay = Math.min(refillDelay * 2, 30_000);
    refillSoon();
  }, refillDelay);
}

// --- orders -------------------------------------------------------------------------------------------
async function submit(order) {
  const link = activeLink();
  if (!link) {
    order.status = "waiting for a link";
    render();
    return;
  }
  order.status = "sent";
  order.via = link.nodeId;
  order.sending = true;
  const sentAt = performance.now();
  const answering = link.request({ event: "submit", signed: order.signed });    // out before the page redraws
  render();
  try {
    const answer = await answering;
    order.wireMs = answer.receivedAt - sentAt;        // the session, the node and its block
    order.sending = false;
    if (answer.error) {
      order.status = `refused: ${answer.error.code}`;
    } else if (answer.final) {
      // sent again over another link: "duplicate" says a final block already holds it
      order.status = `final: ${answer.ops?.[0]?.outcome ?? answer.status}`;
      order.finalMs = answer.receivedAt - order.placedAt;      // from the click: signing, sending, the block
      order.final = true;
    } else {
      order.status = "accepted, not final yet";
      setTimeout(() => { if (!order.final && !order.sending) submit(order); }, 2000);   // the same bytes: asks again
    }
  } catch {
    order.sending = false;
    order.status = "link lost: sending again";
    render();
    return submit(order);     // the same signed bytes over another link: never two orders
  }
  $("order-result").textContent = `${order.orderId} ${order.status}`;
  render();
}

function resend() {
  for (const order of state.orders.values()) {
    if (!order.final && !order.sending && !order.status.startsWith("refused")) submit(order);
  }
}

async function placeOrder(event) {
  event.preventDefault();
  if (!state.account || !state.chainId) {
    $("order-result").textContent = "no node linked yet";
    return;
  }
  const side = $("order-side").value, price = $("order-price").value.trim(), qty = $("order-qty").value.trim();
  const placedAt = performance.now();
  const made = await P2P.signOrder(state.account, { chainId: state.chainId, market: MARKET, side, price, qty });
  const order = { side, price, qty, status: "signed", orderId: made.orderId, signed: made.signed, txId: made.txId,
    placedAt, signMs: performance.now() - placedAt };
  state.orders.set(made.orderId, order);
  $("order-result").textContent = `${made.orderId} signed`;
  submit(order);          // it renders once the order is on its way
}

// Close every session (a tab closed without it holds its nodes' slots until they find it idle).
async function closeLinks() {
  await Promise.all(state.links.map(async (link) => {
    link.state = "closed";
    clearInterval(link.pinger);
    try {
      link.pc?.close();
      await link.writer?.close();
      link.transport?.close({ closeCode: 0, reason: "page closed" });
      await link.transport?.closed;
    } catch { /* already closed */ }
  }));
}

// --- start ----------------------------------------------------------------------------------------
function fromAddress() {
  // #node=<url>&hash=<hex>[,<hex>]&id=<node id>: what a page opened from a file is given
  // (&expires=<ms>[,<ms>]: when each certificate ends, as GET /status `cert_expires_ms` says)
  const params = new URLSearchParams(location.hash.slice(1));
  WANT_LINKS = Math.max(1, Number(params.get("links")) || WANT_LINKS);
  const expires = (params.get("expires") ?? "").split(",").map(Number);
  return { url: params.get("node"), id: params.get("id"),
    hashes: (params.get("hash") ?? "").split(",").filter(Boolean).map((hash, i) => ({ hash, expires: expires[i] || 0 })) };
}

async function start() {
  if (!window.isSecureContext || typeof WebTransport === "undefined" || !crypto.subtle) {
    $("key-state").textContent = "this browser cannot be a peer here: the page needs a secure context with " +
      "WebTransport and WebCrypto (open it from a file, or from a node on localhost)";
    return;
  }
  try {
    state.account = await P2P.accountKey();
    $("account").textContent = state.account.hex;
    $("key-state").textContent = (state.account.made ? "made now" : "kept") +
      (state.account.extractable ? "" : ", non-extractable");
  } catch (e) {
    $("key-state").textContent = `no key: ${e.message ?? e}`;
  }
  $("order-form").addEventListener("submit", placeOrder);
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    dial($("dial-url").value.trim(), $("dial-hash").value.split(",").map((h) => ({ hash: h.trim() })),
      $("dial-id").value.trim() || null);
  });
  $("key-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    await P2P.importKeyFile(await file.text());
    location.reload();
  });
  addEventListener("pagehide", closeLinks);
  $("links").addEventListener("click", (event) => {       // orders go through the node whose row was clicked
    const row = event.target.closest("tr[data-node-id]");
    if (row?.dataset.state === "up") {
      state.preferred = row.dataset.nodeId;
      render();
    }
  });
  const given = fromAddress();
  if (given.url) dial(given.url, given.hashes, given.id);
  render();
}

start();
