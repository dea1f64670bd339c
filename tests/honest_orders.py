"""The honest trader of the flood tests, as a process of its own (tests/flood.py `HonestClient` starts it).

    python -m tests.honest_orders API_URL INTERVAL [AUTH_HEADER [open]]

Places one order every INTERVAL seconds at API_URL (alternately a buy and a sell far from any spam price),
waits for each to be final (`POST /orders?wait=20`), and prints `sent latency` per order (`sent` on the
machine's monotonic clock, which every process shares; latency `null` when it did not become final), until
its stdin closes; the orders in flight when it does are finished and printed first. One at a time (the next
order once the last is answered, at least INTERVAL after it), or with `open` every INTERVAL whatever is still
in flight (an open loop: how many become final a second is then the system's throughput, not 1 / latency).
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
    open_loop = len(argv) > 3 and argv[3] == "open"
    stop = threading.Event()
    printing = threading.Lock()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    def one(n: int) -> None:
        sent = time.monotonic()
        status = place(api_url, headers, n)
        latency = time.monotonic() - sent
        with printing:
            print(f"{sent!r} {latency!r}" if status == 201 else f"{sent!r} null", flush=True)
    threading.Thread(target=until_stdin_closes, daemon=True).start()
    in_flight: list[threading.Thread] = []
    n = 0
    started = time.monotonic()
    while not stop.is_set():
        n += 1
        if open_loop:
            in_flight = [thread for thread in in_flight if thread.is_alive()]
            in_flight.append(threading.Thread(target=one, args=(n,)))
            in_flight[-1].start()
            stop.wait(max(0.0, started + n * interval - time.monotonic()))
        else:
            sent = time.monotonic()
            one(n)
            stop.wait(max(0.0, interval - (time.monotonic() - sent)))
    for thread in in_flight:
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
