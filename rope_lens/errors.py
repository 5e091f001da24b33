"""User-facing errors: each carries one line that says what went wrong and what to do.

The CLI prints ``error: <message>`` and exits with status 2 for any ``RopeLensError``;
anything else is a bug and keeps its traceback.
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
