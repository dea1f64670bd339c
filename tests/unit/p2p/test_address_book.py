"""AddressBook poisoning limits: size cap, per-reporter intake cap, verified entries kept, undialable skipped."""
from __future__ import annotations

import time

from p2p.address_book import AddressBook, KnownAddress, address_group, dialable
from p2p.discovery.base import Candidate


def bogus(i: int) -> Candidate:
    return Candidate(f"127.88.{i // 250 % 250}.{i % 250 + 1}", 1024 + i % 60000, "pex", f"{i:040x}")


def test_ten_thousand_from_one_reporter_stay_within_caps():
    book = AddressBook(capacity=500, per_source_per_interval=100, interval=60.0)
    for port in range(7000, 7010):
        book.mark_connected(("127.0.0.1", port), f"{port:040x}")
    added = sum(book.add(bogus(i), reporter="evil") for i in range(10_000))
    assert added == 100 and book.rejected == 9_900
    # of the 100 it got in, it holds its source group's share: the rest replaced its own
    assert len(book) == 10 + book.new_share and len(book.verified()) == 10


def test_size_cap_never_evicts_verified_for_unverified():
    book = AddressBook(capacity=50, per_source_per_interval=10_000)
    for port in range(7000, 7050):
        book.mark_connected(("127.0.0.1", port), f"{port:040x}")
    assert not any(book.add(bogus(i), reporter="evil") for i in range(1000))
    assert len(book) == 50 and len(book.verified()) == 50


def test_size_cap_evicts_unverified_first():
    book = AddressBook(capacity=20, per_source_per_interval=10_000)
    for port in range(7000, 7010):
        book.mark_connected(("127.0.0.1", port), f"{port:040x}")
    for i in range(1000):
        book.add(bogus(i), reporter=f"r{i}")
    assert len(book) == 20 and len(book.verified()) == 10


def test_intake_window_resets():
    book = AddressBook(per_source_per_interval=5, interval=0.05)
    assert sum(book.add(bogus(i), reporter="r") for i in range(20)) == 5
    assert sum(book.add(bogus(i), reporter="other") for i in range(100, 120)) == 5  # per reporter
    time.sleep(0.06)
    assert sum(book.add(bogus(i), reporter="r") for i in range(200, 220)) == 5


def test_refresh_of_known_address_does_not_use_intake():
    book = AddressBook(per_source_per_interval=1)
    assert book.add(bogus(1), reporter="r")
    assert not book.add(bogus(1), reporter="r")  # already known: not new, but not rejected either
    assert book.rejected == 0


def test_undialable_and_self_skipped():
    book = AddressBook()
    book.self_addresses.add(("127.0.0.1", 7946))
    for host, port in [("0.0.0.0", 1), ("224.0.0.251", 5353), ("255.255.255.255", 1), ("127.0.0.1", 0),
                       ("127.0.0.1", 70000), ("127.0.0.1", 7946), ("bad host!", 1), ("", 1)]:
        assert not book.add(Candidate(host, port, "pex"), reporter="r"), (host, port)
    assert len(book) == 0 and book.rejected == 8
    assert dialable("10.0.0.1", 7946) and not dialable("127.0.0.1", 1, allow_loopback=False)
    # IPv6: loopback as IPv4's (Python counts ::1 in the reserved ::/8); unspecified, multicast and reserved never
    assert dialable("::1", 7946) and not dialable("::1", 7946, allow_loopback=False)
    assert dialable("2001:db8:1::5", 7946) and dialable("2a01:4f8:1:2::3", 7946)
    assert not any(dialable(host, 7946) for host in ("::", "ff02::fb", "::ffff:0:0", "100::1"))


def test_higher_priority_source_wins_on_merge():
    book = AddressBook()
    book.add(Candidate("127.0.0.1", 9000, "pex", "a" * 40))
    book.add(Candidate("127.0.0.1", 9000, "mdns", "a" * 40))
    known = book.get(("127.0.0.1", 9000))
    assert known is not None and known.source == "mdns"
    book.add(Candidate("127.0.0.1", 9000, "pex"))
    known = book.get(("127.0.0.1", 9000))
    assert known is not None and known.source == "mdns"


def test_unreached_bootstrap_addresses_until_a_link_or_a_duplicate_proves_them():
    book = AddressBook()
    for port in (7001, 7002, 7003):
        book.add(Candidate("127.0.0.1", port, "bootstrap"))
    book.add(Candidate("127.0.0.1", 7004, "pex", "ab" * 20))
    later = time.monotonic() + 120
    assert sorted(e.port for e in book.due_unreached("bootstrap", later)) == [7001, 7002, 7003]
    book.mark_connected(("127.0.0.1", 7001), "cd" * 20)
    book.mark_failed(("127.0.0.1", 7002), "duplicate_link", delay=30.0, reached=True)   # live, linked already
    book.mark_failed(("127.0.0.1", 7003), "connection_refused")
    assert [e.port for e in book.due_unreached("bootstrap", later)] == [7003]
    assert book.due_unreached("bootstrap") == []   # 7003 waits out its backoff first


def test_an_inbound_peers_claimed_address_stays_unverified_until_a_feeler_reaches_it():
    book = AddressBook()
    entry = book.mark_claimed(("127.0.0.2", 4000), "n1", "inbound:10.0.0.0/24")
    assert entry is not None and not entry.verified and book.verified() == []
    assert book.next_feeler() == (("127.0.0.2", 4000), "n1")
    assert book.next_feeler() is None                   # one check per claim
    book.mark_verified(("127.0.0.2", 4000), "n1")
    assert [e.address for e in book.verified()] == [("127.0.0.2", 4000)]


def test_claims_are_capped_per_source_subnet_and_never_displace_what_we_dialled():
    book = AddressBook(capacity=150, per_source_per_interval=100)
    dialled = [book.mark_connected(("127.0.1.1", 5000 + n), f"honest{n}") for n in range(50)]
    taken = [book.mark_claimed(("127.0.0.9", 6000 + n), f"fake{n}", "inbound:10.0.0.0/24") for n in range(10_000)]
    assert sum(1 for t in taken if t is not None) == 100            # one subnet's intake for the interval
    more = [book.mark_claimed(("127.0.0.8", 7000 + n), f"other{n}", "inbound:10.0.1.0/24") for n in range(100)]
    assert sum(1 for t in more if t is not None) == 100             # another subnet: its own intake, room by eviction
    assert len(book) <= 150
    assert {e.address for e in book.verified()} == {e.address for e in dialled}
    assert all(book.get(e.address) is not None for e in dialled)


def test_a_claim_on_an_address_verified_for_another_node_changes_nothing():
    book = AddressBook()
    book.mark_connected(("127.0.0.3", 4000), "honest")
    book.mark_claimed(("127.0.0.3", 4000), "liar", "inbound:10.0.0.0/24")
    entry = book.get(("127.0.0.3", 4000))
    assert entry is not None and entry.verified and entry.node_id == "honest"
    assert book.next_feeler() is None


def test_fresh_keys_in_one_subnet_share_four_reporters_intake():
    book = AddressBook(capacity=5000, per_source_per_interval=100)
    taken = sum(book.add(bogus(i), reporter=f"key{i // 50}", reporter_group="10.0.0.0/24") for i in range(10_000))
    assert taken == 400
    assert book.add(bogus(20_000), reporter="key-x", reporter_group="10.0.1.0/24")     # another subnet is heard


def test_a_flood_from_many_subnets_churns_its_own_shares_and_never_an_honest_sources():
    """addrman's new table: unverified entries are shared out by the network group of whoever told us. Fifty
    attacking /24s with 10,000 addresses fill the book; twenty honest reporters' 200 addresses all stay."""
    book = AddressBook(capacity=2000, per_source_per_interval=10_000)
    honest = set()
    for r in range(20):
        for k in range(10):
            candidate = Candidate(f"10.{r}.{k}.1", 9000 + k, "pex", f"{r * 100 + k:040x}")
            assert book.add(candidate, reporter=f"honest-{r}", reporter_group=f"10.{r}.0.0/24")
            honest.add(candidate.address)
    for i in range(10_000):
        book.add(bogus(i), reporter=f"evil-{i}", reporter_group=f"66.{i % 50}.0.0/24")
    kept = {e.address for e in book}
    assert honest <= kept, f"{len(honest - kept)} honest addresses were evicted by the flood"
    shares = book.new_by_group()
    assert len(book) <= 2000 and max(shares.values()) <= book.new_share, shares
    assert sum(n for g, n in shares.items() if g.startswith("66.")) == len(book) - len(honest)


def test_when_the_book_is_full_the_heaviest_source_group_gives_up_an_entry():
    book = AddressBook(capacity=40, per_source_per_interval=10_000)
    assert book.new_share == 16
    quiet = Candidate("10.1.1.1", 9000, "pex", f"{1:040x}")
    book.add(quiet, reporter="quiet", reporter_group="10.1.1.0/24")
    for group in range(3):      # three groups of 13: the book is full at 40
        for k in range(13):
            book.add(bogus(group * 100 + k), reporter="r", reporter_group=f"66.{group}.0.0/24")
    assert len(book) == 40
    heavy = Candidate("66.0.0.7", 9100, "pex", f"{777:040x}")
    book.add(heavy, reporter="r", reporter_group="66.9.0.0/24")     # a fifth group: someone must go
    assert book.get(quiet.address) is not None and len(book) == 40
    assert sorted(book.new_by_group().values()) == [1, 1, 12, 13, 13]


def test_shares_follow_verification_and_removal():
    book = AddressBook(capacity=100, per_source_per_interval=10_000)
    entry = bogus(1)
    book.add(entry, reporter="r", reporter_group="66.1.0.0/24")
    assert book.new_by_group() == {"66.1.0.0/24": 1}
    assert entry.node_id is not None
    book.mark_connected(entry.address, entry.node_id)           # dialled: tried, out of the new share
    assert book.new_by_group() == {}
    book.add(bogus(2), reporter="r", reporter_group="66.1.0.0/24")
    book.remove(bogus(2).address)
    assert book.new_by_group() == {} and len(book) == 1


def test_address_groups_are_slash_16_or_slash_32_loopback_and_names():
    assert address_group("66.7.200.1") == address_group("66.7.3.9") == "66.7.0.0/16"
    assert address_group("66.8.0.1") != address_group("66.7.0.1")
    assert address_group("2001:db8:1:2::1") == "2001:db8::/32"
    assert address_group("::ffff:66.7.1.1") == "66.7.0.0/16"
    assert address_group("127.0.0.1") == address_group("127.0.9.9") == "loopback/127.0.0.0/16" != address_group("127.9.9.9")
    assert address_group("::1") == "loopback"
    assert address_group("Node.Example") == "name:node.example"


def test_one_range_told_by_many_sources_holds_a_quarter_of_the_unverified_and_churns_its_heaviest_teller():
    """A flood aimed at one /16, told by ten /24s (each within its own source share, together past the range's),
    stops at the range's share; honest addresses in that same range told by a quiet source stay, since the
    range's heaviest teller gives up an entry each time."""
    book = AddressBook(capacity=2000, per_source_per_interval=10_000)
    quiet = [Candidate(f"66.7.250.{k}", 9000, "pex", f"{k:040x}") for k in range(1, 6)]
    for candidate in quiet:
        assert book.add(candidate, reporter="quiet", reporter_group="10.9.9.0/24")
    for i in range(10_000):
        book.add(Candidate(f"66.7.{i // 250 % 250}.{i % 250 + 1}", 20_000 + i % 100, "pex", f"{10**6 + i:040x}"),
                 reporter=f"evil-{i}", reporter_group=f"77.{i % 10}.0.0/24")
    new, tried = book.by_range()
    assert new == {"66.7.0.0/16": book.new_range_share} and tried == {}
    assert all(book.get(c.address) is not None for c in quiet), "the quiet source's addresses were evicted"


def _reach(book: AddressBook, host: str, port: int) -> None:
    book.mark_connected((host, port), f"{port:040x}")


def test_one_range_holds_an_eighth_of_the_verified_and_a_newcomer_waits_for_a_check_of_the_oldest():
    book = AddressBook(capacity=800, per_source_per_interval=10_000)
    share = book.tried_range_share
    assert share == 100
    for k in range(share + 30):                 # one operator's many real nodes in one /16
        _reach(book, f"66.7.{k // 200}.{k % 200 + 1}", 7000 + k)
        time.sleep(0)
    for k in range(20):                         # and honest nodes elsewhere
        _reach(book, f"10.{k}.0.1", 9000 + k)
    new, tried = book.by_range()
    assert tried["66.7.0.0/16"] == share and sum(tried.values()) == share + 20
    assert book.tried_collisions == 30 and new.get("66.7.0.0/16") == 30   # the newcomers wait, unverified
    # test-before-evict: the oldest of the range was queued for a check dial, not evicted
    due = book.next_feeler()
    assert due is not None and due[0] == ("66.7.0.1", 7000)
    assert book.get(("66.7.0.1", 7000)).verified                          # type: ignore[union-attr]


def test_a_failed_check_makes_room_for_the_newcomer_in_a_full_range():
    book = AddressBook(capacity=800, per_source_per_interval=10_000)
    for k in range(book.tried_range_share):
        _reach(book, f"66.7.0.{k + 1}", 7000 + k)
    _reach(book, "66.7.9.9", 8000)                                         # no room: waits
    assert not book.get(("66.7.9.9", 8000)).verified                      # type: ignore[union-attr]
    address, node_id = book.next_feeler()                                 # type: ignore[misc]
    book.mark_failed(address, "connection_refused")                       # the check failed
    _reach(book, "66.7.9.9", 8000)                                         # reached again: takes the room
    assert book.get(("66.7.9.9", 8000)).verified                          # type: ignore[union-attr]
    assert book.get(address) is None and book.by_range()[1]["66.7.0.0/16"] == book.tried_range_share


def test_remembered_verified_entries_keep_their_range_share_when_loaded():
    book = AddressBook(capacity=800)
    entries = [KnownAddress(f"66.7.0.{k + 1}", 7000 + k, "persisted", f"{k:040x}", True) for k in range(150)]
    book.load(entries)
    new, tried = book.by_range()
    assert tried == {"66.7.0.0/16": book.tried_range_share} and new == {"66.7.0.0/16": 50}


def test_a_claim_nobody_reached_is_forgotten_after_three_failed_dials_other_unverified_after_eight():
    """A peer that links in and claims someone else's address (a host it wants us to dial) gets that host dialled
    three times at most (addrman's count); addresses from discovery keep eight tries, and a claim we reached once
    stays however often it fails later."""
    book = AddressBook()
    claimed, told, reached = ("192.0.2.7", 4000), ("198.51.100.7", 4000), ("203.0.113.7", 4000)
    assert book.mark_claimed(claimed, "n1", "inbound:10.0.0.0/24") is not None
    assert book.mark_claimed(reached, "n3", "inbound:10.0.1.0/24") is not None
    book.mark_verified(reached, "n3")
    book.add(Candidate(*told, "pex", "n2"))
    for failures in range(1, 9):
        for address in (claimed, told, reached):
            book.mark_failed(address, "connection_refused")
        assert (book.get(claimed) is not None) == (failures < 3), failures
        assert (book.get(told) is not None) == (failures < 8), failures
        assert book.get(reached) is not None
