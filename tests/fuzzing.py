"""How long the hypothesis fuzz targets run: a few seconds in ``make test``, long in
``make fuzz`` (``RELAYMESH_FUZZ=1``; ``RELAYMESH_FUZZ_EXAMPLES=N`` sets the count)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = bool(os.environ.get("RELAYMESH_FUZZ"))
LONG_FACTOR = 40
"""``make fuzz`` runs this many times the examples of ``make test``."""


def fuzz_settings(short_examples: int) -> settings:
    """``short_examples`` in a normal run; many more under ``make fuzz``."""
    override = os.environ.get("RELAYMESH_FUZZ_EXAMPLES")
    if FUZZ:
        examples = int(override) if override else short_examples * LONG_FACTOR
    else:
        examples = short_examples
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
