"""Lifeguard suspicion timeout arithmetic (memberlist suspicion.go)."""

from __future__ import annotations

from relaymesh.membership.suspicion import Suspicion, remaining_timeout_ms, suspicion_timeout_ms


def test_min_timeout_scales_with_log10_of_cluster_size() -> None:
    assert suspicion_timeout_ms(4, 1, 1000) == 4000  # floor of 1 for small clusters
    assert suspicion_timeout_ms(4, 10, 1000) == 4000
    assert suspicion_timeout_ms(4, 100, 1000) == 8000
    assert suspicion_timeout_ms(4, 1000, 1000) == 12000


def test_starts_at_max_without_confirmations() -> None:
    s = Suspicion("a", k=2, min_timeout_ms=4000, max_timeout_ms=24000, started_at_ms=100)
    assert s.deadline_ms == 100 + 24000


def test_k_zero_uses_the_min_timeout() -> None:
    s = Suspicion("a", k=0, min_timeout_ms=4000, max_timeout_ms=24000, started_at_ms=0)
    assert s.deadline_ms == 4000
    assert not s.confirm("b", 10)


def test_confirmations_shrink_logarithmically_to_min() -> None:
    s = Suspicion("a", k=2, min_timeout_ms=4000, max_timeout_ms=24000, started_at_ms=0)
    assert s.confirm("b", 1000)
    # frac = log(2)/log(3) = 0.6309 -> 24000 - 0.6309 * 20000 = 11381
    assert s.deadline_ms == 11381
    assert s.confirm("c", 2000)
    assert s.deadline_ms == 4000
    assert not s.confirm("d", 2500)  # k reached
    assert s.deadline_ms == 4000


def test_duplicate_and_originator_confirmations_do_not_count() -> None:
    s = Suspicion("a", k=3, min_timeout_ms=1000, max_timeout_ms=6000, started_at_ms=0)
    assert not s.confirm("a", 10)
    assert s.confirm("b", 10)
    assert not s.confirm("b", 20)
    assert s.confirmations == 1


def test_an_overdue_confirmation_expires_now() -> None:
    s = Suspicion("a", k=2, min_timeout_ms=1000, max_timeout_ms=6000, started_at_ms=0)
    s.confirm("b", 5000)
    s.confirm("c", 5000)
    assert s.deadline_ms == 5000


def test_remaining_timeout_never_below_min() -> None:
    assert remaining_timeout_ms(10, 2, 0, 4000, 24000) == 4000
    assert remaining_timeout_ms(0, 2, 1000, 4000, 24000) == 23000
