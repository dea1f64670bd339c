"""The console's "held back" rows for the public surfaces, from what /status says in `public_refused` (the
log itself is p2p/public/refusals.py's, shared with the Grenache HTTP servers)."""
from __future__ import annotations

from typing import Mapping

from node.throttled import ThrottledRow


def refused_rows(view: Mapping[str, object] | None) -> list[ThrottledRow]:
    """The console's "held back" rows for the public surfaces: the most refused addresses, then networks."""
    rows: list[ThrottledRow] = []
    for kind in ("addresses", "subnets"):
        sources = view.get(kind) if view else None
        for source in sources if isinstance(sources, list) else []:
            reasons = source.get("reasons") or {}
            why = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda r: -r[1]))
            rows.append({"peer": str(source.get("source")), "what": "API/stream client",
                         "why": f"refused {source.get('refused')} times ({why}), last {source.get('last_s_ago')} s ago"})
    return rows
