"""The console's "held back" rows for the public surfaces, from what /status says in `public_refused` (the API
and the stream) and in each Grenache HTTP server's `limits.refused_by` (the logs are p2p/public/refusals.py's)."""
from __future__ import annotations

from typing import Mapping

from node.throttled import ThrottledRow


def refused_rows(view: Mapping[str, object] | None, what: str = "API/stream client") -> list[ThrottledRow]:
    """The console's "held back" rows for one public surface (`what` its clients are): the most refused
    addresses, then networks."""
    rows: list[ThrottledRow] = []
    for kind in ("addresses", "subnets"):
        sources = view.get(kind) if view else None
        for source in sources if isinstance(sources, list) else []:
            reasons = source.get("reasons") or {}
            why = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda r: -r[1]))
            rows.append({"peer": str(source.get("source")), "what": what,
                         "why": f"refused {source.get('refused')} times ({why}), last {source.get('last_s_ago')} s ago"})
    return rows


def grenache_refusals(limits: object) -> Mapping[str, object] | None:
    """`refused_by` of a Grenache server's `limits` view (None when the server is not running)."""
    refused_by = limits.get("refused_by") if isinstance(limits, Mapping) else None
    return refused_by if isinstance(refused_by, Mapping) else None
