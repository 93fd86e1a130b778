"""The one error hierarchy of bonmf-pipe.

Every message says what went wrong and how to fix it. The CLI prints a ``BonmfError``
in red and exits 1; anything else is a bug and exits 3 with a traceback hint.
"""

from __future__ import annotations


class BonmfError(Exception):
    """Base class of every error bonmf-pipe raises on purpose."""


class InputError(BonmfError):
    """The input files cannot be used (missing, unknown edition, unreadable)."""


class StoreError(BonmfError):
    """The store is missing, from an incompatible version, or inconsistent."""


class ConfigError(BonmfError):
    """A setting or command-line option is invalid."""


class ModelNotFoundError(BonmfError):
    """An encoder model could not be found locally or downloaded."""


class NetworkError(BonmfError):
    """A download failed or no network is available."""


class QueryError(BonmfError):
    """A SQL query was refused or failed."""
