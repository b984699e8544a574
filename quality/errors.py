"""Exceptions raised by :mod:`quality`.

::

    QualityError
    ├── InputError       a table that is missing columns, has wrong types or too little data
    ├── SchemaError      data whose features do not match what a model was trained on
    └── RegistryError    a model version that does not exist or cannot be promoted
"""

from __future__ import annotations

__all__ = ["InputError", "QualityError", "RegistryError", "SchemaError"]


class QualityError(Exception):
    """Base class of every error raised by :mod:`quality`."""


class InputError(QualityError, ValueError):
    """Input data breaks a rule; the message names the field, the rule and the value."""


class SchemaError(QualityError, ValueError):
    """Data does not have the schema the model was trained on."""


class RegistryError(QualityError, LookupError):
    """A registry operation cannot be carried out."""
