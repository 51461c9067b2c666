"""Exception types raised by augkd library code.

Library code raises these and never calls ``sys.exit``; the CLI boundary (``augkd.cli.main``) turns
them into a one-line message and a non-zero exit. Every message says what was wrong, the value that
was given, and how to fix it.
"""

from __future__ import annotations


class AugKDError(Exception):
    """Base class of every error augkd reports to a user."""


class ConfigError(AugKDError):
    """An invalid configuration value, unknown key or malformed override."""


class InputError(AugKDError):
    """Bad user input: a missing/corrupt file, wrong class count, bad tensor shape, ..."""


class MissingDependencyError(AugKDError):
    """An optional dependency (extra) is needed for the requested feature."""


class KernelUnavailableError(AugKDError):
    """An explicitly requested kernel backend cannot run here."""


class TrainingError(AugKDError):
    """Training cannot go on (for example a NaN/inf loss); the last good checkpoint is kept."""
