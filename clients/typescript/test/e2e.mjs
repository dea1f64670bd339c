// Driven by tests/integration/test_typescript_client.py against real nodes (it starts, kills and restarts
// them); prints what it saw as JSON on stdout.
//   node test/e2e.mjs sign SEED CHAIN_ID         -> signed transactions of every operation kind
//   node test/e2e.mjs trade API_URL TOKEN        -> place, replace, cancel, by client id, an atomic batch, cancel-all, a switch
//   node test/e2e.mjs stream API_URL             -> JSON lines of events; on "done" on stdin, the final copy
import { WebSocket } from "ws";
import { ApiError, Client, MarketStream, Signer } from "../dist/index.js";

const [mode, ...args] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

if (mode === "sign") {
  const [seed, chain] = args;
  const signer = await Signer.fromSeed(seed);
  const ops = [
    { op: "new", market: "BTC-USD", side: "buy", type: "limit", price: "100.25", qty: "0.5", stp: null },
    { op: "new", market: "BTC-USD", side: "sell", type: "post_only", price: "101", qty: "1", stp: null, until: 1800000000000 },
    { op: "new", market: "BTC-USD", side: "buy", type: "limit", price: "1", qty: "1", stp: null, client_id: "desk-1_x" },
    { op: "new", market: "BTC-USD", side: "sell", type: "stop_market", price: null, qty: "1", stp: null,
      trigger_price: "95.5", reduce_only: true },
    { op: "cancel", market: "BTC-USD", order_id: "ab".repeat(15) + "00" },
    { op: "replace", market: "BTC-USD", order_id: "cd".repeat(15) + "01", price: null, qty: "2" },
    { op: "cancel_all", market: null, side: "sell" },
    { op: "schedule_cancel", at: 1800000000000 },
    { op: "schedule_cancel", at: null },
  ];
  const agent = await Signer.agentFromFile(JSON.stringify({ seed: "09".repeat(32), account: signer.account }));
  out({ account: signer.account, each: await Promise.all(ops.map((op) => signer.sign(chain, [op]))),
        all: await signer.sign(chain, ops),
        agent: await agent.sign(chain, [ops[0], { op: "approve_agent", agent: agent.account, markets: "BTC-USD",
                                                  operations: "place,cancel", cap: "1000", expires: null },
                                        { op: "revoke_agent", agent: agent.account }]) });
} else if (mode === "trade") {
  const [url, token] = args;
  const client = new Client(url, { token, signer: await Signer.generate() });
  const first = await client.place("BTC-USD", "buy", "1", "90");
  const second = await client.place("BTC-USD", "sell", "1", "110");
  const moved = await client.replace(first.order.id, "2", "91");
  const gone = await client.cancel(second.order.id);
  let refused = null;
  try { await client.place("NOPE-USD", "buy", "1", "1"); } catch (error) {
    refused = error instanceof ApiError ? { status: error.status, code: error.code } : String(error);
  }
  const named = await client.place("BTC-USD", "buy", "1", "80", { clientId: "ts-desk-1" });
  const [found] = await client.ordersByClientId("ts-desk-1");
  const unnamed = await client.cancelByClientId("ts-desk-1");
  const batch = await client.atomic([{ op: "new", market: "BTC-USD", side: "buy", type: "limit", price: "81", qty: "1" },
                                     { op: "cancel", market: "BTC-USD", order_id: "0".repeat(32) }]);
  const swept = await client.cancelAll();
  const quotes = [(await client.place("BTC-USD", "buy", "1", "95")).order.id,
                  (await client.place("BTC-USD", "sell", "1", "105")).order.id];
  const armed = await client.cancelAfter(3);
  out({ account: client.options.signer.account, first: first.order, moved: moved.order, gone: gone.order, refused,
        swept: swept.body.cancel_all, quotes, armed: armed.body.schedule_cancel, final: [first.final, moved.final, armed.final],
        named: named.order, found, unnamed: unnamed.order, batch });
} else if (mode === "stream") {
  const [url] = args;
  const delivered = [];
  let book = { bids: [], asks: [] };
  const kinds = [];
  const stream = new MarketStream(url, (event) => {
    kinds.push(event.kind);
    if (event.trades) delivered.push(...event.trades.map((t) => t.id));
    if (event.channel === "book") book = { bids: event.bids, asks: event.asks };
    out({ kind: event.kind, trades: delivered.length, book });
  }, { WebSocket, backoffMs: [50, 500] });
  stream.subscribeBook("BTC-USD", 25);
  stream.subscribeTrades("BTC-USD");
  stream.start();
  process.stdin.setEncoding("utf8");
  let input = "";
  process.stdin.on("data", (chunk) => {
    input += chunk;
    if (input.includes("done")) {
      const client = new Client(url);
      Promise.all([client.tradeHistory("BTC-USD"), client.candles("BTC-USD", "1h")]).then(([history, hourly]) => {
        out({ final: true, trades: delivered, book, kinds, reconnects: stream.reconnects, backfills: stream.backfills,
              lastResumeMs: stream.lastResumeMs, history: history.map((t) => t.id),
              hourlyTrades: hourly.reduce((n, c) => n + c.trades, 0) });
        stream.close();
        process.exit(0);
      });
    }
  });
} else {
  console.error("usage: e2e.mjs sign|trade|stream ...");
  process.exit(2);
}
