"""Checking a recorded history against RelayMesh's promises (``python -m relaymesh.chaos.check``).

``history.py`` reads a run's evidence (the store, the agents' journal, a harness's
fault events, the nodes' logs); ``promises.py`` checks it, purely; ``check.py`` is the
command line. Nothing here injects faults: the harnesses live in tests/chaos/.
"""
