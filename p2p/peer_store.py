"""PeerStore: remembers known peers in `.peers.json` across restarts; atomic writes, corruption-tolerant reads.

File shape (orjson): ``{"version": 1, "saved_at": <unix>, "peers": [{"node_id", "host", "port", "source",
"first_seen", "last_seen", "last_connected", "failures"}, ...]}``, most recently seen first.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, overload

import orjson

from config.parsers import InvalidValue, host as parse_host

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_ENTRIES = 1000


@dataclass(slots=True)
class StoredPeer:
    """One remembered address and what we know of it (times are unix seconds)."""

    node_id: str | None
    host: str
    port: int
    source: str = "persisted"
    first_seen: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    last_connected: float | None = None
    failures: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    def from_dict(cls, entry: object) -> StoredPeer:
        """Validate one stored entry; raises ValueError naming what is wrong. Unknown keys are ignored."""
        if not isinstance(entry, dict):
            raise ValueError("entry is not an object")
        try:
            host = parse_host(entry.get("host"))
        except InvalidValue:
            raise ValueError(f"bad host {entry.get('host')!r}") from None
        port = entry.get("port")
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError(f"bad port {port!r}")
        node_id = entry.get("node_id")
        if node_id is not None and (not isinstance(node_id, str) or not node_id):
            raise ValueError(f"bad node_id {node_id!r}")
        source = entry.get("source", "persisted")
        if not isinstance(source, str) or not source:
            raise ValueError(f"bad source {source!r}")
        last_seen = _timestamp(entry, "last_seen", 0.0)
        failures = entry.get("failures", 0)
        if type(failures) is not int or failures < 0:
            raise ValueError(f"bad failures {failures!r}")
        return cls(node_id=node_id, host=host, port=port, source=source,
                   first_seen=_timestamp(entry, "first_seen", last_seen), last_seen=last_seen,
                   last_connected=_timestamp(entry, "last_connected", None), failures=failures)


@overload
def _timestamp(entry: dict[str, Any], key: str, default: float) -> float: ...
@overload
def _timestamp(entry: dict[str, Any], key: str, default: None) -> float | None: ...


def _timestamp(entry: dict[str, Any], key: str, default: float | None) -> float | None:
    value = entry.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"bad {key} {value!r}")
    return float(value)


def _most_recent(peers: Iterable[StoredPeer], limit: int) -> list[StoredPeer]:
    """One entry per address (the most recently seen), newest first, at most `limit`."""
    by_address: dict[tuple[str, int], StoredPeer] = {}
    for peer in peers:
        kept = by_address.get(peer.address)
        if kept is None or peer.last_seen > kept.last_seen:
            by_address[peer.address] = peer
    return sorted(by_address.values(), key=lambda p: p.last_seen, reverse=True)[:limit]


class PeerStore:
    """Reads and writes one peers file. `load` never raises; `save` raises OSError but never leaves a torn file."""

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.loaded = False     # saving before the file was read would replace what it remembers

    def load(self) -> list[StoredPeer]:
        """Remembered peers, newest first. Missing file: []. Unusable file: moved aside, warned about, []."""
        self.loaded = True
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            return self._set_aside(f"unreadable ({exc.strerror or exc})")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self._set_aside(f"not valid JSON ({exc})")
        if not isinstance(document, dict) or not isinstance(document.get("peers"), list):
            return self._set_aside('not an object with a "peers" list')
        if document.get("version") != FORMAT_VERSION:
            return self._set_aside(f"unsupported version {document.get('version')!r}")
        peers, skipped = [], 0
        for index, entry in enumerate(document["peers"]):
            try:
                peers.append(StoredPeer.from_dict(entry))
            except ValueError as exc:
                skipped += 1
                log.debug("peer store %s: skipping entry %d: %s", self.path, index, exc)
        if skipped:
            log.warning("peer store %s: skipped %d bad entr%s of %d", self.path, skipped,
                        "y" if skipped == 1 else "ies", len(document["peers"]))
        return _most_recent(peers, self.max_entries)

    def save(self, peers: Iterable[StoredPeer]) -> None:
        """Atomically replace the file with the `max_entries` most recently seen peers."""
        kept = _most_recent(peers, self.max_entries)
        payload = orjson.dumps({"version": FORMAT_VERSION, "saved_at": time.time(),
                                "peers": [asdict(peer) for peer in kept]}, option=orjson.OPT_INDENT_2)
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(directory)

    def _set_aside(self, why: str) -> list[StoredPeer]:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.warning("peer store %s is %s and could not be moved to %s (%s); starting with no remembered peers",
                        self.path, why, target, exc.strerror or exc)
        else:
            log.warning("peer store %s is %s; moved it to %s and starting with no remembered peers",
                        self.path, why, target)
        return []


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable. Best effort: some platforms cannot open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
