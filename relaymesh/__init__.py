"""RelayMesh: workflows of agent steps on a self-healing mesh of node daemons."""

__version__ = "0.1.0"

__all__ = ["__version__"]
