"""The honest trader of the flood tests, as a process of its own (tests/flood.py `HonestClient` starts it).

    python -m tests.honest_orders API_URL INTERVAL [AUTH_HEADER]

Places one order every INTERVAL seconds at API_URL (alternately a buy and a sell far from any spam price),
waits for each to be final (`POST /orders?wait=20`), and prints `sent latency` per order (`sent` on the
machine's monotonic clock, which every process shares; latency `null` when it did not become final), until
its stdin closes; the order in flight when it does is finished and printed first.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request


def place(api_url: str, headers: dict[str, str], n: int) -> int:
    order = {"market": "BTC-USD", "side": "buy" if n % 2 else "sell",
             "price": str(80 + n % 5 if n % 2 else 120 + n % 5), "qty": "0.01"}
    request = urllib.request.Request(api_url + "/orders?wait=20", data=json.dumps(order).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def main(argv: list[str]) -> None:
    api_url, interval = argv[0], float(argv[1])
    headers = {"Authorization": argv[2]} if len(argv) > 2 and argv[2] else {}
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()
    threading.Thread(target=until_stdin_closes, daemon=True).start()
    n = 0
    while not stop.is_set():
        n += 1
        sent = time.monotonic()
        status = place(api_url, headers, n)
        latency = time.monotonic() - sent
        print(f"{sent!r} {latency!r}" if status == 201 else f"{sent!r} null", flush=True)
        stop.wait(max(0.0, interval - (time.monotonic() - sent)))


if __name__ == "__main__":
    main(sys.argv[1:])
