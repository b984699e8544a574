"""Exceptions raised by the twin.

::

    TwinError
    ├── ConfigError        a plant file that is missing, malformed or breaks a rule
    ├── ScenarioError      a plant state or scenario event that cannot be applied
    └── OutputError        simulation output that cannot be written
"""

from __future__ import annotations

__all__ = ["ConfigError", "OutputError", "ScenarioError", "TwinError"]


class TwinError(Exception):
    """Base class of every error raised by :mod:`twin`."""


class ConfigError(TwinError, ValueError):
    """The plant configuration is invalid; the message names field, rule and value."""


class ScenarioError(TwinError, ValueError):
    """A plant state or scenario event is invalid for this plant."""


class OutputError(TwinError, OSError):
    """Simulation output could not be written; nothing partial is left behind."""
