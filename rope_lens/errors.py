"""User-facing errors: each carries one line that says what went wrong and what to do.

The CLI prints ``error: <message>`` and exits with status 2 for any ``RopeLensError`` (and,
with the path, for an ``OSError`` such as a full disk); anything else is a bug and keeps its
traceback. ``--debug`` keeps the traceback for every error.
"""

from __future__ import annotations


class RopeLensError(Exception):
    """Base class for errors caused by input the user can fix."""


class ModelNotFoundError(RopeLensError):
    """Unknown model name, or weights that are not available offline."""


class InputError(RopeLensError):
    """Bad prompts, layers, heads, positions or bands."""


class CheckpointError(RopeLensError):
    """A missing, corrupt or mismatched checkpoint or cache."""


class OutputError(RopeLensError):
    """An output folder or file that cannot be written (read-only, a file, a full disk)."""


class BusyError(RopeLensError):
    """An output or run folder locked by another rope-lens process."""


class BadResultError(RopeLensError):
    """Numbers that must not be saved: NaN or infinite values from a model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that work is flushed before exit."""
