"""The ``streamgd`` group, and the one place where library errors
(:class:`~streamgd.errors.StreamgdError`) become one-line messages and exit codes (:func:`run`);
nothing else in the package prints to the terminal except the progress reporter."""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence

import click

from .. import __version__
from ..errors import (
    EXIT_DATA,
    EXIT_INTERNAL,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    Interrupted,
    StreamgdError,
    UsageError,
)
from ..training.callbacks import JsonLogger
from .commands import COMMANDS
from .fit import fit
from .options import EXIT_CODES_HELP

__all__ = ["cli", "main", "run"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="streamgd")
def cli() -> None:
    """Train linear models (regression, classification, SVM) on Parquet and CSV files larger
    than memory, streaming them in shuffled mini-batches, with exact checkpoint/resume."""



for _command in (fit, *COMMANDS):
    cli.add_command(_command)


# -- the one place where errors become messages and exit codes -------------------------------
def _json_log_requested(argv: Sequence[str] | None) -> bool:
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1] == "json"
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1] == "json"
    return os.environ.get("STREAMGD_LOG_FORMAT") == "json"


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to exit codes."""
    code = run(argv)
    sys.exit(code)


def run(argv: Sequence[str] | None = None, *, echo: Callable[[str], None] | None = None) -> int:
    say = echo or (lambda msg: click.echo(msg, err=True))
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="streamgd",
            standalone_mode=False,
        )
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        if _json_log_requested(argv):
            JsonLogger().emit(
                "error", message=exc.format_message(), exit_code=EXIT_USAGE, error="UsageError"
            )
        else:
            exc.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        say("streamgd: aborted")
        return 130
    except StreamgdError as exc:
        if not getattr(exc, "reported", False):
            prefix = "usage error" if isinstance(exc, UsageError) else "error"
            say(f"streamgd: {prefix}: {exc}")
        return exc.exit_code
    except Interrupted as exc:  # start-up or statistics pass: nothing was written yet
        message = (
            f"stopped by {signal.Signals(exc.signum).name} before training began; nothing "
            "was changed on disk: a rerun starts afresh (with --resume, from the newest "
            "checkpoint if there is one)"
        )
        _report(argv, say, message, EXIT_PREEMPTED, "Interrupted")
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        say("streamgd: interrupted")
        return 130
    except BrokenPipeError:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return EXIT_DATA
    except OSError as exc:  # the environment, met where no seam words it: still not a bug
        _report(argv, say, _os_error_line(exc), EXIT_DATA, type(exc).__name__)
        return EXIT_DATA
    except Exception as exc:  # a bug: say so, with the traceback for the report
        traceback.print_exc(file=sys.stderr)
        say(f"streamgd: internal error (please report it): {type(exc).__name__}: {exc}")
        return EXIT_INTERNAL


def _report(
    argv: Sequence[str] | None, say: Callable[[str], None], message: str, code: int, error: str
) -> None:
    if _json_log_requested(argv):
        JsonLogger().emit("error", message=message, exit_code=code, error=error)
    else:
        say(f"streamgd: error: {message}")


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError no seam turned into a StreamgdError: the path and the reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or -1)
    if code:
        reason = f"{reason} ({code})"
    if exc.filename is None:
        return f"{reason}; check the paths given, their permissions and free space"
    paths = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        paths += f" -> {os.fsdecode(exc.filename2)}"
    return f"{paths}: {reason}; check that path, its permissions and free space"
