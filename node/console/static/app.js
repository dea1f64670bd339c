// The console: one /ws stream (status, book, trades, ticker, own orders) and the control API for the ticket.
import { drawDepth, drawGraph } from "./charts.js";
import { LocalBook, Stream } from "./stream.js";
import { reachText, tickerText } from "./words.js";

const TOKEN_KEY = "exchange-node-token";
const BOOK_DEPTH = 100;
const SHOWN_LEVELS = 15;
const SHOWN_TRADES = 30;
const $ = (id) => document.getElementById(id);

const state = { market: null, book: new LocalBook(BOOK_DEPTH), trades: [], orders: new Map(), status: null,
  ticker: null, dirty: new Set() };

// --- the token: from the URL fragment (#token=...) or pasted; kept for this tab only ----------------
function takeToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

let token = takeToken();

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
  }
  return data;
}

// --- rendering helpers ----------------------------------------------------------------------------
function row(cells, classes = []) {
  const tr = document.createElement("tr");
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    if (value instanceof Node) td.append(value); else td.textContent = value ?? "-";
    if (classes[i]) td.className = classes[i];
    tr.append(td);
  });
  return tr;
}

function fill(tableId, rows) {
  $(tableId).querySelector("tbody").replaceChildren(...rows);
}

function ago(ts) {
  if (!ts) return "-";
  const seconds = Math.max(0, Date.now() / 1000 - ts);
  return seconds < 120 ? `${seconds.toFixed(0)}s ago` : `${(seconds / 60).toFixed(0)}m ago`;
}

function seconds(value) {
  return value === null || value === undefined ? "-" : `${(value * 1000).toFixed(1)} ms`;
}

function renderStatus() {
  const status = state.status;
  if (!status) return;
  const node = status.node;
  $("node-id").textContent = node.node_id;
  $("node-version").textContent = node.version;
  $("node-network").textContent = node.network_id;
  $("node-listen").textContent = node.listen;
  $("node-role").textContent = node.role || "member";
  const reach = node.reachability || {};
  $("node-reach").textContent = reachText(node.reachability);
  $("node-reach").title = (reach.addresses || []).map((a) =>
    `${a.host}:${a.port} ${a.how} ${a.confirmed ? "confirmed" : "not reached"}`).concat(
    (reach.relays || []).map((r) => `relayed via ${r.slice(0, 12)}`)).join("\n");
  $("node-uptime").textContent = `${Math.round(node.uptime_s)} s`;
  const connected = status.peers.filter((p) => p.status === "connected").length;
  $("peer-count").textContent = `${connected} connected, ${status.peers.length} known`;
  renderChain(status.chain || {});
  drawGraph($("graph"), node, status.peers);
  fill("peers", status.peers.map((p) => row([p.node_id, p.via ? `via relay ${p.via.slice(0, 12)}` : `${p.host}:${p.port}`, p.status, p.direction, p.source,
    p.rtt_ms === null ? "-" : p.rtt_ms.toFixed(2), (p.links || []).length, ago(p.last_seen)], ["id"])));
  fill("held-back", (status.held_back || []).map((h) => row([h.peer, h.what, h.why], ["id"])));
  const finality = status.finality;
  $("finality-p50").textContent = seconds(finality.p50_seconds);
  $("finality-p99").textContent = seconds(finality.p99_seconds);
  $("finality-pending").textContent = finality.pending_events;
  $("retry-budget").textContent = status.routing.retry_budget.balance;
  const routes = [];
  for (const [service, peers] of Object.entries(status.routing.services)) {
    for (const [peer, r] of Object.entries(peers)) {
      routes.push(row([service, peer, r.score, r.latency_ms, r.error_rate, r.breaker,
        r.hint ? `${r.hint} x${r.hint_multiplier}` : "-", r.outstanding],
      ["", "id", "", "", "", `breaker-${r.breaker}`]));
    }
  }
  fill("router", routes);
}

// The chain panel and, while the chain cannot finalise (no quorum) or is halted, or the node sees two
// networks and was given nothing to choose by, the red banner. A follower hears validators through the last
// block's signatures and its links' heartbeats: one heard within the live window is live, as for a validator.
function validatorState(v, role) {
  if (v.us) return ["this node", "validator-live"];
  if (v.heard_s === null) return [role === "validator" ? "never heard since start" : "not in the last block, no heartbeat heard", "validator-silent"];
  return v.live ? ["live", "validator-live"] : [`silent ${v.heard_s.toFixed(0)} s`, "validator-silent"];
}

function splitReason(networks) {
  if (!networks || networks.length < 2) return null;
  const names = networks.map((n) => `${n.chain_id.slice(0, 12)} (${n.peers} peer(s))`).join(", ");
  return `NOT JOINING ANY NETWORK — peers are on ${networks.length} networks with this NETWORK_ID: ${names}. ` +
    "Restart this node with CHAIN_ID=<the chain id you mean> or a join token issued on that network.";
}

function renderChain(chain) {
  const set = chain.validators || {};
  $("chain-summary").textContent = chain.role ? `${chain.role}, ${set.size} validators` :
    `not on a chain yet${chain.founding ? ": " + chain.founding : ""}`;
  $("chain-height").textContent = chain.height ?? "-";
  $("chain-epoch").textContent = chain.epoch ?? "-";
  $("chain-quorum").textContent = chain.quorum ? `yes (${set.quorum} of ${set.size})` : `NO (${set.quorum} of ${set.size} needed)`;
  $("chain-quorum").dataset.ok = String(Boolean(chain.quorum));
  $("chain-faults").textContent = set.faults_tolerated ?? "-";
  $("chain-lag").textContent = chain.finality_lag_s === null || chain.finality_lag_s === undefined ? "-" : `${chain.finality_lag_s.toFixed(1)} s`;
  $("chain-pending").textContent = chain.own_pending ?? "-";
  fill("validators", (chain.liveness || []).map((v) => {
    const [text, cls] = validatorState(v, chain.role);
    return row([v.node_id, text], ["id", cls]);
  }));
  const halt = chain.halt || {};
  const banner = $("halt-banner");
  const reason = chain.halted ? `chain halted on this node: ${chain.halted}` : halt.halted ? halt.reason : null;
  const split = splitReason(chain.networks_in_sight);
  banner.hidden = !reason && !split;
  banner.textContent = reason ? `HALTED — orders are not becoming final. ${reason}` : split || "";
}

function renderBook() {
  const bids = state.book.levels("bids"), asks = state.book.levels("asks");
  drawDepth($("depth"), bids, asks);
  const rows = [];
  for (let i = 0; i < Math.min(SHOWN_LEVELS, Math.max(bids.length, asks.length)); i++) {
    const [bp, bq] = bids[i] || ["", ""], [ap, aq] = asks[i] || ["", ""];
    rows.push(row([bq, bp, ap, aq], ["bid", "bid", "ask", "ask"]));
  }
  fill("book", rows);
  $("book").dataset.resyncs = String(stream.resyncs);
}

function renderTrades() {
  fill("trades", state.trades.slice(-SHOWN_TRADES).reverse().map((t) => row(
    [new Date(t.ts * 1000).toLocaleTimeString(), t.price, t.qty, t.taker_side], ["", t.taker_side, "", t.taker_side])));
}

function renderOrders() {
  const rows = [...state.orders.values()].filter((o) => o.market === state.market).slice(-50).reverse().map((o) => {
    const open = ["open", "partially_filled", "pending", "untriggered"].includes(o.status);
    const button = document.createElement("button");
    button.textContent = "cancel";
    button.disabled = !open;
    button.addEventListener("click", () => cancel(o.id));
    const refused = o.validator_refusal ? `; a validator refused it for now: ${o.validator_refusal.error}` : "";
    const status = o.status === "pending" ? `pending (${o.reason || "not final"}${refused})` : o.status;
    return row([o.id, o.side, o.type, o.price, o.qty, o.remaining, status, open ? button : ""],
      ["id", o.side]);
  });
  fill("orders", rows);
  $("orders-hint").hidden = Boolean(token);
}

function renderTicker() {
  if (state.ticker || state.trades.length) $("ticker").textContent = tickerText(state.ticker, state.trades);
}

const renderers = { status: renderStatus, book: renderBook, trades: renderTrades, orders: renderOrders,
  ticker: renderTicker };

function mark(part) {
  if (!state.dirty.size) requestAnimationFrame(() => {
    for (const name of state.dirty) renderers[name]();
    state.dirty.clear();
  });
  state.dirty.add(part);
}

// --- the stream -------------------------------------------------------------------------------------
const stream = new Stream(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, {
  onInfo(info) {
    const select = $("market-select");
    if (!select.options.length) {
      select.replaceChildren(...info.markets.map((m) => new Option(m, m)));
      showMarket(info.markets[0]);
    }
  },
  onState(value, code, reason) {
    $("stream-state").dataset.state = value;
    $("stream-state").textContent = code ? `${value} (${code} ${reason || ""})` : value;
  },
  onError(error) {
    if (error.code === "auth_failed") {
      $("token-state").textContent = "token refused";
      $("token-state").className = "error";
    }
  },
});

stream.subscribe("status", { channel: "status" }, (message) => {
  state.status = message.status;
  mark("status");
});

function showMarket(market) {
  for (const key of ["book", "trades", "ticker"]) stream.unsubscribe(key);
  state.market = market;
  state.book = new LocalBook(BOOK_DEPTH);
  state.trades = [];
  state.ticker = null;
  stream.subscribe("book", { channel: "book", market, depth: BOOK_DEPTH }, (message) => {
    const ok = state.book.apply(message);
    mark("book");
    return ok;
  });
  stream.subscribe("trades", { channel: "trades", market }, (message) => {
    state.trades = (message.type === "snapshot" ? [] : state.trades).concat(message.trades).slice(-200);
    mark("trades");
    mark("ticker");
  });
  stream.subscribe("ticker", { channel: "ticker", market }, ({ ticker }) => {
    state.ticker = ticker;
    mark("ticker");
  });
  mark("orders");
}

function followOrders() {
  stream.authenticate(token);
  $("token-state").textContent = token ? "token set" : "no token";
  $("token-state").className = "";
  if (!token) return;
  stream.subscribe("orders", { channel: "orders" }, (message) => {
    if (message.type === "snapshot") state.orders.clear();
    for (const order of message.orders) state.orders.set(order.id, order);
    mark("orders");
  });
}

$("market-select").addEventListener("change", (event) => showMarket(event.target.value));

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim() || null;
  $("token").value = "";
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  stream.unsubscribe("orders");
  followOrders();
});

// --- the ticket ---------------------------------------------------------------------------------------
function report(text, failed) {
  $("order-result").textContent = text;
  $("order-result").className = failed ? "error" : "";
}

$("order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const type = $("order-type").value;
  const body = { market: state.market, side: $("order-side").value, type, qty: $("order-qty").value.trim() };
  const price = $("order-price").value.trim();
  if (type !== "market" && type !== "stop_market" && (price || type !== "take_profit")) body.price = price;
  if (type.startsWith("stop_") || type === "take_profit") body.trigger_price = $("order-trigger").value.trim();
  const clientId = $("order-client-id").value.trim();
  if (clientId) body.client_id = clientId;
  if ($("order-reduce-only").checked) body.reduce_only = true;
  const account = $("order-account").value.trim();
  if (account) body.account = account;
  const goodFor = Number($("order-until").value.trim());
  if (goodFor > 0) body.until = Math.round(Date.now() + goodFor * 1000);
  try {
    const { order, trades } = await api("POST", "/orders?wait=2", body);
    state.orders.set(order.id, order);
    mark("orders");
    report(`order ${order.id} ${order.status}${order.reason ? ` (${order.reason})` : ""}, ${trades.length} trade(s)`,
      order.status === "pending");
  } catch (error) {
    report(`refused: ${error.message}`, true);
  }
});

async function cancel(orderId) {
  try {
    const { order, cancel: outcome } = await api("DELETE", `/orders/${encodeURIComponent(orderId)}?wait=2`);
    state.orders.set(order.id, order);
    mark("orders");
    report(`cancel of ${orderId}: ${outcome.status}`, outcome.status === "rejected");
  } catch (error) {
    report(`cancel refused: ${error.message}`, true);
  }
}

$("cancel-client-id").addEventListener("click", async () => {
  const clientId = $("cancel-id").value.trim();
  const account = $("order-account").value.trim();
  if (!clientId) return;
  const query = new URLSearchParams({ client_id: clientId, wait: "2", ...(account ? { account } : {}) });
  try {
    const { order, cancel: outcome } = await api("DELETE", `/orders?${query}`);
    state.orders.set(order.id, order);
    mark("orders");
    report(`cancel of client id ${clientId} (${order.id}): ${outcome.status}`, outcome.status === "rejected");
  } catch (error) {
    report(`cancel refused: ${error.message}`, true);
  }
});

$("cancel-all").addEventListener("click", async () => {
  const account = $("order-account").value.trim();
  const body = { market: state.market, ...(account ? { account } : {}) };
  try {
    const { cancel_all: outcome, pending_not_covered: uncovered } = await api("POST", "/orders/cancel-all?wait=2", body);
    const done = outcome.status === "done" ? `${outcome.cancelled} cancelled` : outcome.status;
    const rest = uncovered.length ? `; ${uncovered.length} pending order(s) not covered` : "";
    report(`cancel all in ${state.market}: ${done}${rest}`, outcome.status === "rejected");
  } catch (error) {
    report(`cancel all refused: ${error.message}`, true);
  }
});

async function cancelAfter(body) {
  const account = $("order-account").value.trim();
  try {
    const { schedule_cancel: outcome } = await api("POST", "/orders/cancel-after?wait=2", { ...body, ...(account ? { account } : {}) });
    const when = outcome.at ? ` (fires at ${new Date(outcome.at).toLocaleTimeString()} unless armed again)` : "";
    report(`dead-man's switch ${outcome.status}${when}`, outcome.status === "rejected");
  } catch (error) {
    report(`switch refused: ${error.message}`, true);
  }
}

$("switch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const seconds = Number($("switch-seconds").value.trim());
  if (seconds > 0) cancelAfter({ after: seconds });
});
$("switch-clear").addEventListener("click", () => cancelAfter({ at: null }));

$("cancel-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("cancel-id").value.trim();
  if (id) cancel(id);
});

// --- agent keys: approved for the ticket's account, listed, revoked ---------------------------------------
async function loadAgents() {
  const account = $("order-account").value.trim();
  try {
    const { agents } = await api("GET", `/agents${account ? `?account=${encodeURIComponent(account)}` : ""}`);
    fill("agents", agents.map((a) => {
      const button = document.createElement("button");
      button.textContent = "revoke";
      button.addEventListener("click", () => revokeAgent(a.agent));
      const expires = a.expires === null ? "never" : new Date(a.expires).toLocaleTimeString() + (a.expired ? " (expired)" : "");
      return row([a.agent, (a.markets || ["all"]).join(","), a.operations.join(","), a.cap || "-", expires, button],
        ["id"]);
    }));
  } catch (error) {
    report(`agents: ${error.message}`, true);
  }
}

async function revokeAgent(agent) {
  const account = $("order-account").value.trim();
  try {
    const { revoke_agent: outcome } = await api("DELETE", `/agents/${agent}?wait=2${account ? `&account=${encodeURIComponent(account)}` : ""}`);
    report(`agent ${agent.slice(0, 12)}… ${outcome.status}${outcome.reason ? ` (${outcome.reason})` : ""}`,
      outcome.status === "rejected");
  } catch (error) {
    report(`revoke refused: ${error.message}`, true);
  }
  loadAgents();
}

$("agent-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const list = (id) => $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
  const seconds = Number($("agent-expires").value.trim());
  const account = $("order-account").value.trim();
  const body = { agent: $("agent-key").value.trim(), markets: list("agent-markets").length ? list("agent-markets") : null,
    ...(list("agent-operations").length ? { operations: list("agent-operations") } : {}),
    cap: $("agent-cap").value.trim() || null, expires: seconds > 0 ? Math.round(Date.now() + seconds * 1000) : null,
    ...(account ? { account } : {}) };
  try {
    const { approve_agent: outcome } = await api("POST", "/agents?wait=2", body);
    report(`agent ${body.agent.slice(0, 12)}… ${outcome.status}${outcome.reason ? ` (${outcome.reason})` : ""}`,
      outcome.status === "rejected");
  } catch (error) {
    report(`approval refused: ${error.message}`, true);
  }
  loadAgents();
});
$("agent-refresh").addEventListener("click", loadAgents);

followOrders();
