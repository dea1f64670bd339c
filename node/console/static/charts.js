// SVG drawings: the peer graph and the depth chart. Plain DOM, redrawn whole (they are small).

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function ring(ids, radius) {
  const at = new Map();
  const step = (2 * Math.PI) / (ids.length === 2 ? 3 : Math.max(ids.length, 1));   // two peers: not in line with us
  ids.forEach((id, i) => {
    const angle = step * i - Math.PI / 2;
    at.set(id, [radius * Math.cos(angle), radius * Math.sin(angle)]);
  });
  return at;
}

// This node in the middle, its peers on a ring, nodes only its peers link to on an outer ring.
export function drawGraph(svg, self, peers) {
  const connected = peers.filter((p) => p.status === "connected");
  const others = peers.filter((p) => p.status !== "connected");
  const direct = new Set(connected.map((p) => p.node_id));
  const remote = [...new Set(connected.flatMap((p) => p.links || []))]
    .filter((id) => id !== self.node_id && !direct.has(id)).sort();
  const at = new Map([[self.node_id, [0, 0]],
    ...ring(connected.map((p) => p.node_id).concat(others.map((p) => p.node_id)), 120), ...ring(remote, 190)]);
  svg.replaceChildren();
  const drawn = new Set();
  for (const peer of connected) {
    const [x, y] = at.get(peer.node_id);
    svg.append(el("line", { x1: 0, y1: 0, x2: x, y2: y, class: "graph-edge direct" }));
    if (peer.rtt_ms !== null && peer.rtt_ms !== undefined) {
      svg.append(el("text", { x: x / 2 + 4, y: y / 2 - 4, class: "graph-label" }, `${peer.rtt_ms.toFixed(1)} ms`));
    }
    for (const other of peer.links || []) {
      const key = [peer.node_id, other].sort().join("|");
      if (other === self.node_id || drawn.has(key) || !at.has(other)) continue;
      drawn.add(key);
      const [ox, oy] = at.get(other);
      svg.append(el("line", { x1: x, y1: y, x2: ox, y2: oy, class: "graph-edge" }));
    }
  }
  const node = (id, kind, label, title) => {
    const [x, y] = at.get(id);
    const circle = el("circle", { cx: x, cy: y, r: kind === "self" ? 14 : 10, class: `graph-node ${kind}`,
      "data-node-id": id });
    circle.append(el("title", {}, title));
    svg.append(circle, el("text", { x: x + 14, y: y + 4, class: "graph-label" }, label));
  };
  node(self.node_id, "self", `${self.node_id.slice(0, 8)} (this node${self.role ? ", " + self.role : ""})`,
    self.node_id);
  for (const peer of connected.concat(others)) {
    const kind = peer.status === "connected" ? "connected" : "down";
    node(peer.node_id, kind, `${peer.node_id.slice(0, 8)} ${peer.role || ""} via ${peer.source}`,
      `${peer.node_id}\n${peer.host}:${peer.port} ${peer.status} (${peer.direction}, found by ${peer.source})`);
  }
  for (const id of remote) node(id, "remote", id.slice(0, 8), `${id}\n(linked to one of our peers)`);
}

// Cumulative size against price: bids stepping down to the left, asks stepping up to the right.
export function drawDepth(svg, bids, asks) {
  svg.replaceChildren();
  const width = 600, height = 220, pad = 24;
  if (!bids.length && !asks.length) {
    svg.append(el("text", { x: width / 2 - 30, y: height / 2, class: "axis" }, "empty book"));
    return;
  }
  const cumulative = (rows) => {
    let total = 0;
    return rows.map(([price, qty]) => [Number(price), (total += Number(qty))]);
  };
  const b = cumulative(bids), a = cumulative(asks);
  const prices = b.concat(a).map((r) => r[0]);
  const margin = (Math.max(...prices) - Math.min(...prices)) * 0.1 || Math.max(...prices) * 0.01 || 1;
  const low = Math.min(...prices) - margin, high = Math.max(...prices) + margin, span = high - low;
  const top = Math.max(b.length ? b[b.length - 1][1] : 0, a.length ? a[a.length - 1][1] : 0) || 1;
  const x = (p) => pad + ((p - low) / span) * (width - 2 * pad);
  const y = (q) => height - pad - (q / top) * (height - 2 * pad);
  const area = (rows, edge, cls) => {       // from the best price out to the chart's edge
    if (!rows.length) return;
    let d = `M ${x(rows[0][0])} ${y(0)}`;
    let previous = 0;
    for (const [price, total] of rows) { d += ` L ${x(price)} ${y(previous)} L ${x(price)} ${y(total)}`; previous = total; }
    d += ` L ${x(edge)} ${y(previous)} L ${x(edge)} ${y(0)} Z`;
    svg.append(el("path", { d, class: cls }));
  };
  area(b, low, "depth-bids");
  area(a, high, "depth-asks");
  const label = (value) => String(Math.round(value * 1e6) / 1e6);
  svg.append(el("text", { x: pad, y: height - 6, class: "axis" }, label(low)),
    el("text", { x: width - pad - 40, y: height - 6, class: "axis" }, label(high)),
    el("text", { x: 4, y: pad - 8, class: "axis" }, `${top} total`));
}
