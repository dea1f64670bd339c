"""A process that appends to a RecordLog through GroupCommit from many coroutines and prints one line per
acknowledged record (`ack <index> <body>`), for tests that kill it with SIGKILL under load.

    python -m tests.unit.storage.log_writer DIR RUN_TAG
"""
from __future__ import annotations

import asyncio
import sys

from storage.group_commit import GroupCommit
from storage.recordlog import RecordLog

WRITERS = 16
SEGMENT_BYTES = 64 * 1024


async def main(directory: str, tag: str) -> None:
    log = RecordLog.open(directory, segment_bytes=SEGMENT_BYTES)
    print(f"open {log.report.summary()}", flush=True)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)

    async def writer(number: int) -> None:
        sent = 0
        while True:
            body = f"{tag}:{number}:{sent}:".encode() * (1 + sent % 7)
            (index,) = await commit.submit([body])
            sys.stdout.write(f"ack {index} {body.decode()}\n")
            sys.stdout.flush()
            sent += 1

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
