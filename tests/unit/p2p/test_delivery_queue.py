"""The hold queue's bounds: messages held for unreachable peers are bounded by bytes per target and in
all, not only by count, and what does not fit pushes out the oldest of whoever holds the most."""
from __future__ import annotations

from p2p.delivery_queue import DeliveryQueue
from p2p.resilience.protection import Protection


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(**kw) -> tuple[DeliveryQueue, Clock]:
    clock = Clock()
    return DeliveryQueue(clock=clock, **{"max_messages": 1000, "ttl": 60.0, **kw}), clock


def _seqs(queue: DeliveryQueue, target: str) -> list[int]:
    """What is held for `target`, oldest first."""
    held = queue._queues.get(target)
    return [] if held is None else [h.message["seq"] for h in held.items]


def test_one_target_holds_at_most_its_bytes_and_its_newest_stay():
    queue, _ = _queue(max_target_bytes=10_000, max_bytes=1 << 20)
    evicted = []
    for seq in range(25):
        refusal, out = queue.put("far", {"type": "x", "seq": seq}, size=1_000)
        assert refusal is None
        evicted += [held.message["seq"] for held in out]
    assert queue.bytes == 10_000 and len(queue) == 10
    assert evicted == list(range(15)), "the oldest made room"
    assert _seqs(queue, "far") == list(range(15, 25))


def test_all_targets_together_hold_at_most_the_total_and_the_heaviest_gives_way():
    queue, _ = _queue(max_target_bytes=8_000, max_bytes=20_000)
    for seq in range(3):
        queue.put("light", {"type": "x", "seq": seq}, size=1_000)       # a peer gone a moment: a few votes
    for n in range(200):                                                # a flood for many fresh targets ...
        queue.put(f"fresh-{n % 4}", {"type": "x", "seq": n}, size=2_000)
    assert queue.bytes <= 20_000
    assert _seqs(queue, "light") == [0, 1, 2], "a light target lost its messages to a heavy one"
    assert {target for target in queue.targets() if target.startswith("fresh")} <= {f"fresh-{i}" for i in range(4)}


def test_what_could_never_fit_is_refused_and_too_many_targets_too():
    queue, _ = _queue(max_target_bytes=4_000, max_bytes=1 << 20, max_targets=2)
    assert queue.put("a", {"type": "x"}, size=4_001) == ("too_large_to_hold", [])
    assert queue.put("a", {"type": "x"}, size=10)[0] is None
    assert queue.put("b", {"type": "x"}, size=10)[0] is None
    assert queue.put("c", {"type": "x"}, size=10) == ("too_many_queues", [])
    assert queue.bytes == 20


def test_bytes_are_given_back_when_messages_leave_by_any_way():
    queue, clock = _queue(max_target_bytes=1 << 20, max_bytes=1 << 20, protection=Protection("off"))
    for seq in range(4):
        queue.put("t", {"type": "x", "seq": seq}, size=100)
    ready, _, _ = queue.take("t")               # no warm-up pacing: all of them may go
    assert len(ready) == 4 and queue.bytes == 0
    queue.requeue_front("t", ready)             # the route vanished mid-flush: counted again
    assert queue.bytes == 400
    clock.now += 61
    assert len(queue.expire()) == 4 and queue.bytes == 0 and queue.targets() == []


def test_a_message_held_for_a_short_while_expires_then():
    queue, clock = _queue(max_target_bytes=1 << 20, max_bytes=1 << 20)
    queue.put("t", {"type": "x", "seq": 1}, size=10, ttl=5.0)
    clock.now += 5.5
    assert [held.message["seq"] for held in queue.expire()] == [1] and queue.bytes == 0


def test_an_answer_held_a_few_seconds_expires_then_even_behind_older_messages():
    now = [0.0]
    queue = DeliveryQueue(ttl=60.0, clock=lambda: now[0])
    assert queue.put("peer", {"type": "x", "n": 1}, size=10)[0] is None              # held the queue's 60 s
    assert queue.put("peer", {"type": "rpc_response", "n": 2}, size=10, ttl=5.0)[0] is None
    assert queue.put("peer", {"type": "x", "n": 3}, size=10)[0] is None
    now[0] = 6.0
    gone = queue.expire()
    assert [held.message["n"] for held in gone] == [2] and queue.pending("peer") == 2 and queue.bytes == 20
    now[0] = 61.0
    assert [held.message["n"] for held in queue.expire()] == [1, 3] and queue.bytes == 0 and not queue.targets()
