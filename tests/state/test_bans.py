"""Brute-force bans: thresholds, doubling, who is spared, and reporting their ends."""

from __future__ import annotations

from bastion.state.bans import BanBook


def book() -> BanBook:
    return BanBook(ban_after=3, key_after=5, window=60, base=10, maximum=80)


def test_an_address_is_banned_at_the_threshold_and_others_are_not() -> None:
    bans = book()
    assert bans.failure("10.0.0.1", None, 0) == [] and bans.failure("10.0.0.1", None, 1) == []
    (ban,) = bans.failure("10.0.0.1", None, 2)
    assert (ban.kind, ban.subject, ban.seconds, ban.offence) == ("address", "10.0.0.1", 10, 1)
    assert bans.address_banned("10.0.0.1", 5) == 7
    assert bans.address_banned("10.0.0.2", 5) == 0


def test_failures_outside_the_window_do_not_count() -> None:
    bans = book()
    bans.failure("a", None, 0)
    bans.failure("a", None, 1)
    assert bans.failure("a", None, 62) == []  # the first two are older than 60 s
    assert bans.address_banned("a", 62) == 0


def test_repeat_offences_double_the_ban_up_to_the_maximum() -> None:
    bans = book()
    now = 0.0
    seconds = []
    for _ in range(5):
        for _ in range(3):
            started = bans.failure("a", None, now)
        seconds.append(started[0].seconds)
        now = started[0].until  # the ban ends; the attacker starts again at once
    assert seconds == [10, 20, 40, 80, 80]
    # failures while banned do not extend the ban
    for _ in range(3):
        assert bans.failure("a", None, now - 1) == []
    quiet = book()
    for t in (0, 1, 2):
        quiet.failure("b", None, t)
    for t in (1000, 1001, 1002):  # after more than `maximum` without an offence: back to the base
        last = quiet.failure("b", None, t)
    assert last[0].seconds == 10


def test_a_key_under_attack_locks_out_strangers_but_not_its_bot() -> None:
    bans = book()
    bans.success("192.0.2.7", "bst_k", 0)  # the bot's own address
    started = []
    for n in range(5):  # five different attacking addresses, so no address ban
        started += bans.failure(f"198.51.100.{n}", "bst_k", 1)
    assert [b.kind for b in started] == ["key"]
    assert bans.key_locked("bst_k", "198.51.100.99", 2) == 9
    assert bans.key_locked("bst_k", "192.0.2.7", 2) == 0  # the bot keeps working
    assert bans.key_locked("bst_other", "198.51.100.99", 2) == 0
    assert bans.key_locked("bst_k", "198.51.100.99", 11) == 0  # over


def test_sweep_reports_each_end_once() -> None:
    bans = book()
    for t in (0, 1, 2):
        bans.failure("a", None, t)
    assert bans.sweep(5) == []
    (ended,) = bans.sweep(13)
    assert (ended.kind, ended.subject, ended.until) == ("address", "a", 12)
    assert bans.sweep(14) == []


def test_tables_are_bounded() -> None:
    from bastion.state import bans as module

    small = book()
    original = module._MAX_ENTRIES
    module._MAX_ENTRIES = 100
    try:
        for n in range(1000):
            small.failure(f"10.1.{n // 256}.{n % 256}", None, 0)
        assert len(small._addresses) <= 100
    finally:
        module._MAX_ENTRIES = original
