from p2p.resilience.window import WindowCounter


def test_counts_within_span_and_expiry():
    w = WindowCounter(span=10.0, buckets=10)
    w.add("success", 0.5)
    w.add("error", 1.5, n=2)
    assert w.counts(2.0) == {"success": 1, "error": 2, "timeout": 0, "rejected": 0}
    assert w.total(9.9) == 3
    assert w.count("success", 10.5) == 0      # bucket [0, 1) left the window
    assert w.count("error", 10.5) == 2
    assert w.total(12.0) == 0


def test_rate_and_min_volume():
    w = WindowCounter(span=5.0, buckets=5)
    for t in range(4):
        w.add("success", t * 0.1)
    w.add("timeout", 0.5)
    assert w.rate("timeout", 1.0) == 0.2
    assert w.rate("timeout", 1.0, min_volume=10) == 0.0


def test_long_gap_clears_everything_and_memory_is_bounded():
    w = WindowCounter(span=1.0, buckets=4)
    for i in range(10_000):
        w.add("success", i * 0.001)
    assert len(w._ring) == 4
    assert w.total(9.999) > 0
    assert w.total(1_000.0) == 0
    w.add("error", 1_000.0)
    assert w.counts(1_000.1)["error"] == 1


def test_time_going_backwards_counts_in_newest_bucket():
    w = WindowCounter(span=1.0, buckets=2)
    w.add("success", 5.0)
    w.add("success", 4.0)
    assert w.total(5.0) == 2


def test_bump_counts_like_add_and_returns_the_live_totals():
    by_name = WindowCounter(span=4.0, buckets=4, kinds=("a", "b"))
    by_index = WindowCounter(span=4.0, buckets=4, kinds=("a", "b"))
    for t, kind in [(0.1, "a"), (0.5, "b"), (1.2, "a"), (3.9, "a"), (4.6, "b"), (9.0, "a")]:
        by_name.add(kind, t)
        totals = by_index.bump(by_index.kinds.index(kind), t)
        assert totals == [by_name.count("a", t), by_name.count("b", t)]
        assert by_index.totals(t) == totals
    assert by_index.totals(20.0) == [0, 0]


def test_recent_total_counts_every_kind_in_the_newest_buckets():
    window = WindowCounter(span=5.0, buckets=10, kinds=("ok", "fail"))
    assert window.recent_total(2.0, 0.0) == 0
    for t in (0.1, 1.0, 2.2, 2.9, 3.4):
        window.add("ok", t)
    window.add("fail", 3.6)
    # at 3.7 the newest four 0.5 s buckets start at 2.0: 2.2, 2.9, 3.4 and 3.6
    assert window.recent_total(2.0, 3.7) == 4
    assert window.recent_total(0.5, 3.7) == 1          # only the bucket holding 3.6
    assert window.recent_total(100.0, 3.7) == window.total(3.7) == 6
    assert window.recent_total(2.0, 6.1) == 0           # everything is older than 2 s by then
