"""Whether a simulation fits in this machine's memory, asked before it starts.

Every simulated node holds every member (SWIM has no partial views), so memory grows
with the square of the cluster: ``BYTES_PER_MEMBER_RECORD`` per (node, member) pair,
measured at 5,000 nodes (6.1 GB peak for 25 million records). A run that cannot fit is
refused with one line instead of swapping or being killed by the OOM killer half-way.
"""

from __future__ import annotations

from pathlib import Path

from relaymesh.exceptions import ConfigError

__all__ = ["BYTES_PER_MEMBER_RECORD", "check_memory", "estimated_bytes"]

BYTES_PER_MEMBER_RECORD = 245
"""Peak RSS per (node, member) pair: the ``Member``, its metadata dict and the member
table's indexes (``relaymesh.sim --nodes 5000 --bootstrap``: 6,106,920 kB)."""
BASE_BYTES = 100 * 1024 * 1024
"""The interpreter, the modules and the simulator's own bookkeeping."""


def estimated_bytes(nodes: int) -> int:
    return BASE_BYTES + nodes * nodes * BYTES_PER_MEMBER_RECORD


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable`` in bytes, or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(nodes: int, available: int | None = None) -> None:
    """``ConfigError`` when ``nodes`` simulated nodes would not fit in available memory."""
    free = available if available is not None else available_bytes()
    need = estimated_bytes(nodes)
    if free is not None and need > free:
        raise ConfigError(
            f"{nodes} simulated nodes need about {need / 2**30:.1f} GiB "
            f"({nodes}^2 member records of ~{BYTES_PER_MEMBER_RECORD} B), "
            f"{free / 2**30:.1f} GiB is available: simulate fewer nodes"
        )
