"""Structured logs: JSON lines when stderr is not a terminal, key=value on a TTY.

Every record has an event name (``log.info("lease_claimed", step_id=..., epoch=...)``).
Logs go to stderr so that stdout stays for command output (ids, JSON documents).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any


def _import_structlog() -> Any:
    """structlog imports rich (and pygments) when they are installed, only for pretty
    tracebacks on a terminal, which RelayMesh does not use: ~25 ms and a few MB on every
    command and node. Hide rich while structlog loads (``None`` in ``sys.modules``
    makes ``import rich`` fail as if it were absent), unless something loaded it
    already."""
    if "rich" in sys.modules:
        import structlog as module
    else:
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog as module
        finally:
            del sys.modules["rich"]
    return module


if TYPE_CHECKING:
    import structlog
else:
    structlog = _import_structlog()

__all__ = ["configure_logging", "get_logger"]


def configure_logging(level: str = "info", *, json: bool | None = None, **bound: Any) -> None:
    """Configure structlog once per process; ``bound`` values go on every record."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if bound:
        structlog.contextvars.bind_contextvars(**bound)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
