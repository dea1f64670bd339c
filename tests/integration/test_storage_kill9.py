"""kill -9 under load, again and again, on a real four-validator chain (any three make a quorum, so the others
keep finalising while one is down): every order a node answered 201 or 202 exists on every node afterwards
with what it was answered, no node contradicts a final answer meanwhile, no answer is a 500, and a node
killed mid-write restarts with a torn tail at most, never "damage"."""
from __future__ import annotations

import random
import threading
import time
from typing import Any

from tests.harness import Cluster, converged, wait_until
from tests.integration.answers import UNREACHABLE, Answers, random_order

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}
KILLS = 6
CLIENTS = 12


def test_kill_9_under_load_loses_no_answered_order(cluster: Cluster):
    nodes = cluster.chain(4, **FAST)
    answers = Answers()
    stop = threading.Event()

    def client(index: int) -> None:
        rng = random.Random(index)
        node = nodes[index % len(nodes)]
        while not stop.is_set():
            try:    # half of the answers come at once (202: durable in the outbox only), half once final
                answers.post(node, random_order(rng), wait=rng.choice([0.0, 1.0]), timeout=5)
            except UNREACHABLE:
                stop.wait(0.05)      # killed: back in a moment

    def prober() -> None:
        rng = random.Random(99)
        while not stop.is_set():
            finals = list(answers.finals)
            if finals:
                answers.probe(rng.choice(nodes), rng.choice(finals))
            stop.wait(0.02)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for thread in threads:
        thread.start()
    rng = random.Random(1919)
    try:
        for kill in range(KILLS):
            victim = nodes[kill % len(nodes)]
            before = len(answers.accepted)
            wait_until(lambda: len(answers.accepted) >= before + 100, 30, message="orders flowing before a kill")
            time.sleep(rng.uniform(0.0, 0.5))
            victim.kill()
            victim.start(wait=False)
            victim.wait_ready(30)
            wait_until(lambda: victim.status()["exchange"]["recovering"] is None, 30,
                       message=f"{victim.name} serving again after kill {kill}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    print("answers", dict(answers.codes), "accepted", len(answers.accepted))
    assert answers.codes[201] > 300 and answers.codes[202] > 300, answers.codes
    wait_until(lambda: converged(nodes), 60, interval=0.3, message="all four nodes agree after the kills")
    answers.settle(nodes)
    assert not answers.problems, answers.problems[:20]
    for node in nodes:
        text = node.log_path.read_text(errors="replace")
        assert "DAMAGE" not in text and "damaged" not in text, f"{node.name} took a kill for damage"
        assert node.status()["p2p"]["counters"]["bans"] == 0
    restarted = [n for n in nodes if n.log_path.read_text(errors="replace").count("blocks replayed") >= 2]
    assert len(restarted) == len(nodes)
