"""Who this node is holding back and why, gathered for the console from what /status already says: the
validator's transaction budget (held or dropped per neighbour), the broadcast budgets over their limit now and
those that had copies dropped over them before (per neighbour, per network and per origin), the sync budget (requests ignored
per peer), peers with misbehaviour points or banned (the last reason given), and the networks whose links wait
for a read turn (p2p/link_reading.py ReadTurns: this node is behind what they send)."""
from __future__ import annotations

from typing import Iterable, Mapping, TypedDict

MAX_ROWS = 32       # the console's table is bounded whoever floods
# the broadcast budgets' roles (p2p/routing/budgets.py), as a row says them; a network's is its part of the total
_BROADCAST_ROLES = {"neighbours": "a neighbour", "networks": "a network (its part of ROUTER_OPEN_TYPE_TOTAL_RATE)",
                    "origins": "an origin"}
READ_BEHIND_S = 1.0     # a network whose links waited this long for read turns without a break is listed


class ThrottledRow(TypedDict):
    peer: str
    what: str       # transactions, <type> broadcasts, sync requests, banned, penalised, reads
    why: str


def throttled_rows(tx_budget: Mapping[str, object] | None, broadcast_budgets: Mapping[str, object] | None,
                   peers: Iterable[Mapping[str, object]],
                   broadcast_refused: Mapping[str, object] | None = None,
                   sync_budget: Mapping[str, object] | None = None) -> list[ThrottledRow]:
    """Rows for the console's "held back" table, at most MAX_ROWS: budgets first (over a broadcast budget now,
    then dropped over one before), then penalties."""
    rows: list[ThrottledRow] = []
    throttled = tx_budget.get("throttled") if tx_budget else None
    for entry in throttled if isinstance(throttled, list) else []:
        rows.append({"peer": str(entry.get("peer")), "what": "transactions",
                     "why": f"past PEER_TX_RATE or its share of PEER_TX_TOTAL_RATE"
                            f"{' (shared by ' + str(entry['network']) + ')' if entry.get('network') else ''}: held "
                            f"{entry.get('held', 0)} times, {entry.get('dropped', 0)} dropped unread"})
    now: set[tuple[str, str]] = set()
    for kind, over in (broadcast_budgets or {}).items():
        if not isinstance(over, Mapping):
            continue
        for role in _BROADCAST_ROLES:
            names = over.get(role)
            for name in names if isinstance(names, list) else []:
                now.add((kind, str(name)))
                rows.append({"peer": str(name), "what": f"{kind} broadcasts",
                             "why": f"over its budget as {_BROADCAST_ROLES[role]} now"})
    for kind, dropped in (broadcast_refused or {}).items():
        if not isinstance(dropped, Mapping):
            continue
        for role in _BROADCAST_ROLES:
            counts = dropped.get(role)
            for name, count in counts.items() if isinstance(counts, Mapping) else ():
                if (kind, str(name)) not in now:
                    rows.append({"peer": str(name), "what": f"{kind} broadcasts",
                                 "why": f"{count} dropped over its budget as {_BROADCAST_ROLES[role]}"})
    ignored = sync_budget.get("throttled") if sync_budget else None
    for entry in ignored if isinstance(ignored, list) else []:
        rows.append({"peer": str(entry.get("peer")), "what": "sync requests",
                     "why": f"past SYNC_PEER_RATE, SYNC_PEER_BYTES or SYNC_TOTAL_BYTES: {entry.get('refused', 0)} "
                            f"ignored"})
    for peer in peers:
        points = peer.get("penalty") or 0
        banned = peer.get("status") == "banned"
        if not banned and not (isinstance(points, (int, float)) and points > 0):
            continue
        reason = peer.get("penalty_reason") or "-"
        rows.append({"peer": str(peer.get("node_id")), "what": "banned" if banned else "penalised",
                     "why": f"{points} points, last for {reason}"})
    return rows[:MAX_ROWS]


def read_turn_rows(read_turns: Mapping[str, object] | None) -> list[ThrottledRow]:
    """A row per network whose links have waited for a read turn for READ_BEHIND_S or longer without a break, the
    most waiting first (at most MAX_ROWS): this node reads them slower than they send, one link's turn per network
    per event-loop turn. A shorter wait is one busy event-loop turn, not a node behind."""
    waiting = read_turns.get("waiting") if read_turns else None
    behind = read_turns.get("behind_s") if read_turns else None
    if not isinstance(waiting, Mapping) or not isinstance(behind, Mapping):
        return []
    behind_long = [(str(network), count, seconds) for network, count in waiting.items()
                   if isinstance(count, int) and count > 0
                   and isinstance(seconds := behind.get(network), (int, float)) and seconds >= READ_BEHIND_S]
    behind_long.sort(key=lambda item: (-item[1], item[0]))
    return [{"peer": network, "what": "reads",
             "why": f"{count} link{'s' if count != 1 else ''} waiting for this network's read turn for {seconds:.0f} s: "
                    f"this node is behind what they send"} for network, count, seconds in behind_long[:MAX_ROWS]]
