"""Hold every packet the kernel queues (nftables `queue num N`) for a fixed time, then let it go on.

This kernel has no netem, so the WAN test network adds delay in userspace: a router or host namespace
sends the packets crossing its WAN edge to an NFQUEUE, and this process (run inside that namespace)
gives each its ACCEPT verdict `delay_ms` after it arrived, in arrival order. Only the packet's metadata
crosses into userspace (COPY_META), so a packet costs two netlink messages whatever its size.

    python -m tests.integration.delay_queue DELAY_MS [QUEUE_NUM]
prints "ready" once bound, then runs until killed.
"""
from __future__ import annotations

import collections
import sys
import threading
import time

import fnfqueue


def main() -> None:
    delay = float(sys.argv[1]) / 1000.0
    queue_num = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    conn = fnfqueue.Connection()
    queue = conn.bind(queue_num)
    queue.set_mode(fnfqueue.MAX_PAYLOAD, fnfqueue.COPY_META)
    queue.set_maxlen(65536)
    held: collections.deque = collections.deque()       # (release time, packet), in arrival order
    arrived = threading.Condition()

    def release() -> None:
        while True:
            with arrived:
                while not held:
                    arrived.wait()
                due, packet = held[0]
                wait = due - time.monotonic()
                if wait > 0:
                    arrived.wait(wait)
                    continue
                held.popleft()
            packet.accept()

    threading.Thread(target=release, daemon=True).start()
    print("ready", flush=True)
    for packet in conn:
        with arrived:
            held.append((time.monotonic() + delay, packet))
            arrived.notify()


if __name__ == "__main__":
    main()
