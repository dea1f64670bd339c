// What the console says, from what the node reports: pure functions (no DOM), run under Node.js by
// tests/unit/node/test_console_words.py.

const V4_LAN = [[10, 8], [172, 12], [192, 16], [100, 10], [169, 16]];   // 10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16

function v4Scope(host) {
  const parts = host.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return null;
  const value = ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3];
  if (parts[0] === 127 || parts[0] === 0) return "loopback";
  const prefixes = { 10: 0x0a000000, 172: 0xac100000, 192: 0xc0a80000, 100: 0x64400000, 169: 0xa9fe0000 };
  for (const [first, bits] of V4_LAN) {
    const mask = (0xffffffff << (32 - bits)) >>> 0;
    if (((value & mask) >>> 0) === prefixes[first]) return "lan";
  }
  return "global";
}

/** "loopback", "lan" (private, carrier-grade NAT, link-local) or "global" for an address a peer saw us at. */
export function addressScope(host) {
  const text = String(host || "").replace(/^\[|\]$/g, "").toLowerCase();
  const v4 = v4Scope(text.startsWith("::ffff:") ? text.slice(7) : text);
  if (v4) return v4;
  if (text === "::1" || text === "::" || text === "localhost") return "loopback";
  if (/^f[cd]/.test(text) || /^fe[89ab]/.test(text)) return "lan";
  return text.includes(":") ? "global" : "lan";
}

/** The header's reachability: what /status reports, said only as far as it was measured. The node calls
 * itself public when every peer it knows is on its own network and dialled it back; on loopback or a LAN
 * that says nothing about the internet, so the console says where the dial-backs came from. */
export function reachText(reach) {
  if (!reach || !reach.reachability) return "unknown (NAT traversal is off)";
  const relays = reach.relays || [];
  if (reach.reachability === "private") {
    return relays.length ? `private (reached through ${relays.length} relay${relays.length > 1 ? "s" : ""})`
      : "private (no relay yet)";
  }
  if (reach.reachability !== "public") return "unknown";
  const scopes = new Set((reach.addresses || []).filter((a) => a.confirmed).map((a) => addressScope(a.host)));
  if (scopes.has("global")) return "public";
  if (scopes.has("lan")) return "public on this LAN only (no dial-back from outside it)";
  if (scopes.has("loopback")) return "unknown (only dialled back on loopback)";
  return "unknown (no address confirmed by a dial-back)";
}

/** The ticker line. After a restart the node's ticker has no last trade until the next one, while the trades
 * the page loaded (oldest first) already hold it: the last price falls back to the newest of them. */
export function tickerText(ticker, trades) {
  const t = ticker || {};
  const newest = trades && trades.length ? trades[trades.length - 1] : null;
  const last = t.last_price ?? (newest ? newest.price : null);
  return `bid ${t.bid ?? "-"}  ask ${t.ask ?? "-"}  last ${last ?? "-"}  24h vol ${t.volume_24h ?? "-"}`;
}
