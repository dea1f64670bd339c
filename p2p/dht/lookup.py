"""The iterative lookup, sans I/O: which nodes to ask next, and when the answer is in.

Kademlia asks the `alpha` closest nodes it knows for nodes closer to the target, and again of what they
return, until the `k` closest it has heard from stop changing. S/Kademlia runs `paths` such lookups at
once over disjoint sets of nodes (a node handed to one path is never used by another), so a lookup fails
only if every path meets an adversary; a value (a record) found on any path ends it. The driver sends the
`Query`s `next_queries` returns and reports each answer (`answered`) or failure (`failed`); hop counts
are the depth of the node that answered with the value (a seed is one hop).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from p2p.dht.ids import distance

V = TypeVar("V")

ALPHA = 3
PATHS = 4           # S/Kademlia's d: why 4, in docs/tradeoffs.md


@dataclass(frozen=True, slots=True)
class Query:
    path: int
    node_id: str


@dataclass(slots=True)
class _Path:
    candidates: dict[str, int] = field(default_factory=dict)      # node id -> depth, not yet asked
    inflight: set[str] = field(default_factory=set)
    responded: list[tuple[int, str]] = field(default_factory=list)   # (distance, node id), sorted
    finished: bool = False


class Lookup(Generic[V]):
    def __init__(self, target: str, seeds: list[str], *, k: int = 20, alpha: int = ALPHA, paths: int = PATHS,
                 want_value: bool = True, exclude: frozenset[str] = frozenset()) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self.value: V | None = None
        self.hops = 0                       # depth of the node that answered with the value
        self.queries = 0
        self._depth: dict[str, int] = {}
        self._claimed: set[str] = set(exclude)
        ordered = sorted({s for s in seeds if s not in self._claimed}, key=lambda n: distance(n, target))
        self._paths = [_Path() for _ in range(max(1, min(paths, len(ordered))))]
        for i, node_id in enumerate(ordered):
            self._claim(self._paths[i % len(self._paths)], node_id, 1)

    def _claim(self, path: _Path, node_id: str, depth: int) -> None:
        self._claimed.add(node_id)
        self._depth[node_id] = depth
        path.candidates[node_id] = depth

    @property
    def done(self) -> bool:
        return (self.want_value and self.value is not None) or all(p.finished for p in self._paths)

    def next_queries(self) -> list[Query]:
        """The queries to send now (each path keeps at most `alpha` in flight)."""
        out: list[Query] = []
        if self.done:
            return out
        for index, path in enumerate(self._paths):
            if path.finished:
                continue
            while len(path.inflight) < self.alpha and path.candidates:
                node_id = min(path.candidates, key=lambda n: distance(n, self.target))
                if len(path.responded) >= self.k and distance(node_id, self.target) >= path.responded[self.k - 1][0]:
                    path.candidates.clear()             # nothing left that is closer than what we have
                    break
                del path.candidates[node_id]
                path.inflight.add(node_id)
                out.append(Query(index, node_id))
            if not path.inflight and not path.candidates:
                path.finished = True
        self.queries += len(out)
        return out

    def answered(self, query: Query, contacts: list[str], value: V | None = None) -> None:
        """`query.node_id` answered: `contacts` are the nodes it knows closest to the target, `value` the
        record it holds (already checked by the driver; None when it has none)."""
        path = self._paths[query.path]
        path.inflight.discard(query.node_id)
        depth = self._depth.get(query.node_id, 1)
        if value is not None and self.value is None:
            self.value, self.hops = value, depth
        entry = (distance(query.node_id, self.target), query.node_id)
        path.responded.append(entry)
        path.responded.sort()
        for node_id in contacts[:self.k]:
            if node_id not in self._claimed:
                self._claim(path, node_id, depth + 1)

    def failed(self, query: Query) -> None:
        self._paths[query.path].inflight.discard(query.node_id)

    def closest(self) -> list[str]:
        """The `k` closest nodes that answered, over every path."""
        answered = sorted({entry for path in self._paths for entry in path.responded})
        return [node_id for _, node_id in answered[:self.k]]
