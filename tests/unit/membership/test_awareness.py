"""Lifeguard local health score."""

from __future__ import annotations

from relaymesh.membership.awareness import Awareness


def test_score_is_clamped_and_scales_timeouts() -> None:
    a = Awareness(8)
    assert a.scale_ms(500) == 500
    a.apply_delta(3)
    assert a.score == 3
    assert a.scale_ms(500) == 2000
    a.apply_delta(100)
    assert a.score == 7
    a.apply_delta(-100)
    assert a.score == 0


def test_disabled_awareness_stays_healthy() -> None:
    a = Awareness(8, enabled=False)
    a.apply_delta(5)
    assert a.score == 0
    assert a.scale_ms(500) == 500
