"""The one exception tree of RelayMesh.

    RelayMeshError
     ├── ConfigError              settings file or environment is invalid
     ├── WorkflowError            a workflow file is malformed (cycle, unknown agent, ...)
     ├── NotFoundError            a workflow, step or node id does not exist
     ├── InvalidStateError        the operation does not apply to the row's current state
     ├── StoreError               the store failed; translated from sqlite3 / asyncpg / OSError
     │    └── StoreUnavailableError   transient: locked, connection refused or dropped; retry
     │         └── StoreGoneError     the SQLite file was deleted or replaced under the process
     ├── LeaseLostError           a fenced write did not match (token, epoch, RUNNING)
     ├── AgentError               an agent run failed
     │    ├── TransientAgentError     worth retrying (timeout, killed, transient exit code)
     │    └── PermanentAgentError     not worth retrying (bad output, permanent exit code)
     └── ProtocolError            a gossip packet could not be decoded, authenticated or validated

Every class's docstring is its default message. Errors from other libraries are
translated where they cross into RelayMesh, so callers catch only these.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ConfigError",
    "InvalidStateError",
    "LeaseLostError",
    "NotFoundError",
    "PermanentAgentError",
    "ProtocolError",
    "RelayMeshError",
    "StoreError",
    "StoreGoneError",
    "StoreUnavailableError",
    "TransientAgentError",
    "WorkflowError",
]


class RelayMeshError(Exception):
    """RelayMesh failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(RelayMeshError):
    """The settings are invalid."""


class WorkflowError(RelayMeshError):
    """The workflow is invalid."""


class NotFoundError(RelayMeshError):
    """No such object."""


class InvalidStateError(RelayMeshError):
    """The operation does not apply in the object's current state."""


class StoreError(RelayMeshError):
    """The store failed."""


class StoreUnavailableError(StoreError):
    """The store is unavailable for now; retry with backoff."""


class StoreGoneError(StoreUnavailableError):
    """The store's file was deleted or replaced under this process; nothing is read or
    written until the original file is back at its path."""


class LeaseLostError(RelayMeshError):
    """The lease no longer matches; another worker owns the step now."""


class AgentError(RelayMeshError):
    """The agent failed."""


class TransientAgentError(AgentError):
    """The agent failed in a way worth retrying."""


class PermanentAgentError(AgentError):
    """The agent failed in a way not worth retrying."""


class ProtocolError(RelayMeshError):
    """The packet is invalid.

    ``reason`` is the drop counter's label: decode, auth, label, too_large or schema.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"packet dropped: {reason}")
        self.reason = reason
