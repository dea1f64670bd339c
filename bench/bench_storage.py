"""Storage: durable appends through GroupCommit, and how long opening a big record log takes.

1. Append + fdatasync throughput on the real disk under the temp directory: N coroutines each submit one
   ~200-byte record at a time through GroupCommit over a RecordLog. N=1 is one fsync per record, the
   baseline the other rows are compared with (same run, same disk).
2. Recovery: write a ~100 MB log (10 MB with --quick), close it, then time `RecordLog.open` (reads and checks
   every frame, builds the index) and a full `iterate`; also the index's memory and the open's peak RSS growth.
3. What a validator waits for before a vote leaves: `AtomicDocument.store` latency (temporary file, fsync,
   rename, directory fsync); and saving / loading a 20 MB snapshot. Then a vote record's fdatasync (a
   200-byte append every 2 ms, in a thread) while a 32 MB snapshot is saved beside it, the snapshot synced
   once at the end ("whole") or every SYNC_EVERY bytes as the store does ("in pieces"); the baseline row
   saves nothing meanwhile. Each row three times.
4. A node at 10^4, 10^5 and 10^6 orders (10^6 left out with --quick), before and after compaction: the orders
   go through one validator's own chain code (tests/chain_fill.py, 4,000 heights, the book steady), once with
   the block log never cut ("before": every block kept, a restart replays them all) and once as the node runs
   ("after": snapshots every 500 heights, the log cut 1,000 blocks behind the newest). Then a real
   exchange-node takes the directory over: restart-to-serving (spawn to /ready 200), its RSS, the disk used,
   and the RSS of the filling process at 30 %, 60 % and 100 % of the orders (flat once the closed-order
   window of 100,000 is full). Ratios: after / before, and each scale / 10^4.

`python -m bench storage [--quick | --smoke]` (`--smoke`: every part at a tiny size, 50 heights).
"""
from __future__ import annotations

import asyncio
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.options import sized
from bench.table import print_table
from tests.chain_fill import disk_bytes, fill, rss_kib
from tests.harness import Cluster, wait_until
from storage.atomic import AtomicDocument
from storage.group_commit import GroupCommit
from storage.fs import OsFileSystem, replace_file
from storage.snapshots import SYNC_EVERY, SnapshotStore
from storage.recordlog import RecordLog

RECORD = 200


async def append_run(directory: str, writers: int, seconds: float) -> tuple[int, int, float]:
    """(records acknowledged, fsyncs, elapsed) for `writers` coroutines appending for about `seconds`."""
    log = RecordLog.open(directory)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)
    deadline = time.perf_counter() + seconds
    done = 0

    async def writer(number: int) -> None:
        nonlocal done
        sent = 0
        while time.perf_counter() < deadline:
            body = f"{number}:{sent}:".encode().ljust(RECORD, b".")
            await commit.submit([body])
            sent += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - started
    await commit.close()
    syncs = log.syncs
    log.close()
    return done, syncs, elapsed


def group_commit_table(base: str, argv: list[str]) -> None:
    seconds = sized(argv, 4.0, 1.5, 0.2)
    rows = []
    baseline = None
    for writers in (1, 8, 64, 256):
        directory = os.path.join(base, f"append-{writers}")
        done, syncs, elapsed = asyncio.run(append_run(directory, writers, seconds))
        rate = done / elapsed
        baseline = baseline or rate
        rows.append([writers, done, syncs, done / max(syncs, 1), rate, syncs / elapsed, f"x{rate / baseline:.1f}"])
        shutil.rmtree(directory)
    print_table(f"durable appends through GroupCommit ({RECORD}-byte records, fdatasync per batch, {base})",
                ["writers", "records", "fsyncs", "records/fsync", "records/s", "fsyncs/s", "vs 1 writer"], rows)


def write_big_log(directory: str, target_bytes: int) -> int:
    log = RecordLog.open(directory)
    written = 0
    batch = [b"x" * RECORD] * 2000
    while written < target_bytes:
        log.append(batch)
        written += len(batch) * (RECORD + 26)
    count = log.next_index - 1
    log.close()
    return count


def recovery_table(base: str, argv: list[str]) -> None:
    directory = os.path.join(base, "big")
    target = sized(argv, 100, 10, 1) * 1024 * 1024
    records = write_big_log(directory, target)
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    log = RecordLog.open(directory)
    opened = time.perf_counter() - started
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert log.report.clean and log.next_index - 1 == records
    started = time.perf_counter()
    seen = sum(1 for _ in log.iterate())
    iterated = time.perf_counter() - started
    stats = log.stats()
    log.close()
    shutil.rmtree(directory)
    print_table("opening a record log (every frame checked, index built), then reading it all",
                ["log MB", "records", "segments", "open s", "open MB/s", "iterate s", "index KiB",
                 "peak RSS growth MB"],
                [[size / 2**20, seen, stats["segments"], opened, size / 2**20 / opened, iterated,
                  stats["index_bytes"] / 1024, rss_growth_mb]])


def small_writes_table(base: str, argv: list[str]) -> None:
    document = AtomicDocument(os.path.join(base, "docs"), "vote")
    latencies = []
    snapshot_mb = sized(argv, 20, 20, 2)
    for n in range(sized(argv, 300, 50, 10)):
        started = time.perf_counter()
        document.store(f"height={n} round=0 step=precommit locked=none".encode())
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    store = SnapshotStore(os.path.join(base, "snaps"))
    state = os.urandom(snapshot_mb * 2**20)
    started = time.perf_counter()
    store.save(1, [state[i:i + 2**20] for i in range(0, len(state), 2**20)])
    saved = time.perf_counter() - started
    started = time.perf_counter()
    loaded = store.load_newest()
    read = time.perf_counter() - started
    assert loaded is not None and loaded.data == state
    print_table("a validator's vote record, and a snapshot",
                ["document stores", "p50 ms", "p99 ms", "max ms", f"{snapshot_mb} MB snapshot save s", "load s"],
                [[len(latencies), latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
                  latencies[-1], saved, read]])


def _vote_syncs_beside(directory: str, snapshot: bytes | None, sync_every: int | None) -> tuple[list[float], float]:
    """ms of each vote-record fdatasync that overlapped the saving of `snapshot` beside it (none: the same span
    idle), and the save's own seconds."""
    wal = os.open(os.path.join(directory, "wal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    spans: list[tuple[float, float]] = []
    stop = threading.Event()
    synced = threading.Condition()

    def votes() -> None:
        while not stop.is_set():
            os.write(wal, b"v" * RECORD)
            began = time.perf_counter()
            os.fdatasync(wal)
            with synced:
                spans.append((began, time.perf_counter()))
                synced.notify_all()
            time.sleep(0.002)
    thread = threading.Thread(target=votes)
    thread.start()
    with synced:
        synced.wait_for(lambda: bool(spans))
    began = time.perf_counter()
    if snapshot is None:
        time.sleep(0.2)
    else:
        replace_file(OsFileSystem(), os.path.join(directory, "snap"), [snapshot], sync_every=sync_every)
    ended = time.perf_counter()
    with synced:        # the sync in flight when the save ended is one of those it may have slowed
        synced.wait_for(lambda: spans[-1][0] > ended)
    stop.set()
    thread.join()
    os.close(wal)
    return [(end - start) * 1000 for start, end in spans if end >= began and start <= ended], ended - began


def entangled_syncs_table(base: str, argv: list[str]) -> None:
    snapshot_mb = sized(argv, 32, 8, 1)
    snapshot = os.urandom(snapshot_mb * 2**20)
    rows = []
    baseline = None
    for label, data, every in (("nothing saved", None, None), ("whole", snapshot, None),
                               ("in pieces", snapshot, SYNC_EVERY)):
        latencies: list[float] = []
        saves = []
        for run in range(3):
            directory = os.path.join(base, f"entangled-{len(rows)}-{run}")
            os.makedirs(directory)
            got, saved = _vote_syncs_beside(directory, data, every)
            latencies += got
            saves.append(saved)
            shutil.rmtree(directory, ignore_errors=True)
        latencies.sort()
        if not latencies:       # every save fell between two syncs (only at --smoke sizes)
            rows.append([label, 0, "-", "-", "-", "-", f"{sum(saves) / len(saves):.3f}"])
            continue
        worst = latencies[-1]
        baseline = baseline or worst
        rows.append([label, len(latencies), latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
                     worst, worst / baseline, "-" if data is None else f"{sum(saves) / len(saves):.3f}"])
    print_table(f"a vote record's fdatasync while a {snapshot_mb} MB snapshot is saved beside it (synced whole, or "
                f"every {SYNC_EVERY >> 20} MiB)",
                ["snapshot", "syncs", "p50 ms", "p99 ms", "max ms", "max ratio", "save s"], rows)


def restart_to_serving(base: str, name: str) -> tuple[float, int, str]:
    """(seconds from spawn to /ready 200, RSS KiB once serving, the start-up line) of a real node on base/name."""
    cluster = Cluster(Path(base))
    try:
        node = cluster.node(name, start=False, heartbeat_interval=0.5)
        started = time.perf_counter()
        node.start(wait=False)
        node.wait_ready(300)
        wait_until(lambda: node.api("GET", "/ready")[0] == 200, 300, interval=0.02, message="serving")
        seconds = time.perf_counter() - started
        rss = rss_kib(node.proc.pid)
        line = next(x for x in reversed(node.log_tail(200).splitlines()) if "blocks replayed" in x)
        node.stop(60)
        return seconds, rss, line
    finally:
        cluster.close()


def scale_table(base: str, argv: list[str]) -> None:
    heights = sized(argv, 4000, 4000, 50)
    rows = []
    before: dict[int, tuple[int, float]] = {}
    smallest: dict[bool, tuple[int, float, int]] = {}
    counts = sized(argv, (10_000, 100_000, 1_000_000), (10_000, 100_000), (1_000,))
    for orders in counts:
        for compact in (False, True):
            name = f"scale-{orders}-{'after' if compact else 'before'}"
            directory = Path(base) / name
            result = asyncio.run(fill(directory, orders, heights=heights, compact=compact, checkpoints=10))
            rss = {round(p["orders"] / orders, 1): p["rss_kib"] / 1024 for p in result.checkpoints}
            disk = disk_bytes(directory / "chain")
            snapshots = sum(p.stat().st_size for p in (directory / "chain" / "snapshots").iterdir())
            seconds, node_rss, line = restart_to_serving(base, name)
            replayed = int(line.split("(")[1].split()[0])
            if not compact:
                before[orders] = (disk, seconds)
            base_disk, base_seconds = before[orders]
            first = smallest.setdefault(compact, (disk, seconds, node_rss))
            rows.append([orders, "after" if compact else "before", heights, result.seconds, disk / 2**20,
                         snapshots / 2**20, rss.get(0.3, 0.0), rss.get(0.6, 0.0), rss.get(1.0, 0.0), seconds, replayed,
                         node_rss / 1024, f"x{disk / base_disk:.2f}", f"x{seconds / base_seconds:.2f}",
                         f"x{disk / first[0]:.1f}", f"x{seconds / first[1]:.1f}", f"x{node_rss / first[2]:.2f}",
                         f"{os.getloadavg()[0]:.2f}"])
            shutil.rmtree(directory, ignore_errors=True)
    print_table(f"a node at scale: {heights:,} heights, before (no compaction) and after (snapshots every 500 heights, "
                f"log cut 1,000 blocks behind); ratios after/before and vs {counts[0]:,} orders in the same mode",
                ["orders", "compaction", "heights", "fill s", "disk MB", "snapshots MB", "fill RSS 30% MB",
                 "60% MB", "100% MB", "restart-to-serving s", "blocks replayed", "node RSS MB", "disk vs before",
                 "restart vs before", "disk vs first", "restart vs first", "node RSS vs first", "load"], rows)


def main(argv: list[str]) -> None:
    base = tempfile.mkdtemp(prefix="bench-storage-")
    try:
        group_commit_table(base, argv)
        recovery_table(base, argv)
        small_writes_table(base, argv)
        entangled_syncs_table(base, argv)
        scale_table(base, argv)
    finally:
        shutil.rmtree(base, ignore_errors=True)
