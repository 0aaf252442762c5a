"""Library exceptions. The CLI turns them into one-line messages and exit codes in one place.

Every error a user can cause is a :class:`StreamgdError`; anything else escaping the library is a
bug and is reported as an internal error.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_DATA",
    "EXIT_USAGE",
    "EXIT_DIVERGED",
    "EXIT_INTERNAL",
    "EXIT_PREEMPTED",
    "StreamgdError",
    "UsageError",
    "DataError",
    "CheckpointError",
    "DivergedError",
    "PreemptedError",
]

EXIT_OK = 0
EXIT_DATA = 1  # bad data, unreadable file, failed checkpoint: a runtime error
EXIT_USAGE = 2  # bad option or setting (click also uses 2)
EXIT_DIVERGED = 3  # loss or weights became NaN/inf
EXIT_INTERNAL = 70  # a bug in streamgd (EX_SOFTWARE)
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: checkpoint written, rerun with --resume (EX_TEMPFAIL)


class StreamgdError(Exception):
    """Base class of every error streamgd raises on purpose."""

    exit_code = EXIT_DATA


class UsageError(StreamgdError):
    """A setting or option has a value that is not allowed."""

    exit_code = EXIT_USAGE


class DataError(StreamgdError):
    """The input data is not what was expected; the message names file, column and row."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.path, self.column, self.row = path, column, row
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class CheckpointError(StreamgdError):
    """A checkpoint or model file cannot be used (corrupt, wrong version, other settings)."""


class DivergedError(StreamgdError):
    """Training produced a NaN or infinite loss or weight."""

    exit_code = EXIT_DIVERGED


class PreemptedError(StreamgdError):
    """Training was stopped by a signal after writing a checkpoint; it can be resumed."""

    exit_code = EXIT_PREEMPTED
