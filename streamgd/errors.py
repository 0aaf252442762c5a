"""Library exceptions. The CLI turns them into one-line messages and exit codes in one place.

Every error a user can cause is a :class:`StreamgdError`; anything else escaping the library is a
bug and is reported as an internal error.
"""

from __future__ import annotations

import errno as _errno
import os as _os

__all__ = [
    "EXIT_OK",
    "EXIT_DATA",
    "EXIT_USAGE",
    "EXIT_DIVERGED",
    "EXIT_INTERNAL",
    "EXIT_PREEMPTED",
    "StreamgdError",
    "StreamgdWarning",
    "UsageError",
    "DataError",
    "CheckpointError",
    "DivergedError",
    "PreemptedError",
    "EnvironmentFailure",
    "WriteError",
    "Interrupted",
    "environment_failure",
]


EXIT_OK = 0
EXIT_DATA = 1  # bad data, unreadable file, failed checkpoint, the environment: a runtime error
EXIT_USAGE = 2  # bad option or setting (click also uses 2)
EXIT_DIVERGED = 3  # loss or weights became NaN/inf
EXIT_INTERNAL = 70  # a bug in streamgd (EX_SOFTWARE)
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: checkpoint written, rerun with --resume (EX_TEMPFAIL)


class StreamgdError(Exception):
    """Base class of every error streamgd raises on purpose."""

    exit_code = EXIT_DATA


class StreamgdWarning(UserWarning):
    """What the Python API warns about (columns widened between files, outliers, a default
    target, ...): the messages the command line prints as ``warning: ...`` lines. Filter or
    escalate them by this category, e.g. ``warnings.simplefilter("error", StreamgdWarning)``."""


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


class EnvironmentFailure(StreamgdError):
    """The machine, not the data or the settings, stopped the run: no space, permissions, a
    read-only filesystem, a path that is a file where a directory is expected (or the other
    way round), a vanished directory, a lock that cannot be taken. The message names the path
    and what to do; earlier checkpoints and models are untouched."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None):
        self.path, self.errno = path, errno
        super().__init__(message)


class WriteError(EnvironmentFailure):
    """A file could not be written (a checkpoint, the model, a metrics or history file,
    predictions); its temporary file was removed and the file it would replace is intact."""


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """SIGTERM/SIGINT arrived outside the training loop (start-up, statistics pass), where
    nothing has been written yet. A ``BaseException``, so that no ``except Exception`` on the
    way swallows it; the command line turns it into exit 75."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)


# errno -> (what happened, what to do with {where}: the directory or file, {option})
_ADVICE: dict[int, tuple[str, str]] = {
    _errno.ENOSPC: ("no space left on the device", "free space on the device holding {where}"),
    _errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota for {where}"),
    _errno.EFBIG: (
        "file too large (filesystem limit or ulimit -f)",
        "raise the file-size limit (ulimit -f) or write to another filesystem",
    ),
    _errno.EACCES: ("permission denied", "make {where} writable"),
    _errno.EPERM: ("operation not permitted", "make {where} writable"),
    _errno.EROFS: ("read-only file system", "remount {where} read-write"),
    _errno.ENOTDIR: ("a path component is a file, not a directory", "fix the path"),
    _errno.EISDIR: ("is a directory, expected a file", "give a file name"),
    _errno.ENOENT: ("the directory vanished or does not exist", "create {where}"),
    _errno.EEXIST: ("a file is in the way of a directory", "remove it"),
    _errno.EIO: ("input/output error", "check the device holding {where}"),
    _errno.ENOLCK: ("no locks available on this filesystem", "use a local filesystem"),
}


def environment_failure(
    exc: OSError,
    path: str,
    *,
    what: str = "file",
    option: str | None = None,
    cls: type[EnvironmentFailure] = WriteError,
) -> EnvironmentFailure:
    """A one-line :class:`EnvironmentFailure` for ``exc`` met while writing ``what`` at
    ``path``: what happened and what to do, e.g. ``cannot write the model m.npz: no space left
    on the device (ENOSPC); free space on the device holding /data or choose another
    --output``.

    >>> import errno
    >>> print(environment_failure(OSError(errno.EROFS, "x"), "/r/m", what="it", option="-o"))
    cannot write it /r/m: read-only file system (EROFS); remount /r read-write or choose another -o
    """
    code = exc.errno
    happened, todo = _ADVICE.get(code or -1, (exc.strerror or str(exc), ""))
    name = _errno.errorcode.get(code or -1)
    where = _os.path.dirname(_os.path.abspath(path)) or "."
    if code in (_errno.EISDIR, _errno.ENOLCK):
        where = path
    hint = todo.format(where=where)
    if option:
        hint = f"{hint} or choose another {option}" if hint else f"choose another {option}"
    text = f"cannot write {what} {path}: {happened}" + (f" ({name})" if name else "")
    return cls(f"{text}; {hint}" if hint else text, path=path, errno=code)
