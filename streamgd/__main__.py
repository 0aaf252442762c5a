"""The console entry point (``streamgd`` and ``python -m streamgd``).

It installs the SIGTERM/SIGINT handlers before anything else is imported (click and the
command tree take about 0.1 s; a command's own imports, numpy and pyarrow for ``fit``, a few
tenths more), so that a job stopped during start-up ends with exit 75 and a message, not
killed by the signal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    from .cli import signals

    signals.install()
    try:
        from .cli.main import run
    except signals.Interrupted as exc:  # during the imports: the one place is not loaded yet
        _interrupted_at_start(exc.signum, sys.argv[1:] if argv is None else list(argv))
    sys.exit(run(argv))


def _interrupted_at_start(signum: int, args: list[str]) -> None:
    """Exit 75 with the message :func:`streamgd.cli.main.run` would give (as JSON with a JSON
    log), written with the standard library alone: the rest was still being imported."""
    import datetime
    import json
    import os
    import signal

    from .errors import EXIT_PREEMPTED

    message = (
        f"stopped by {signal.Signals(signum).name} during start-up, before any work; nothing "
        "was changed on disk: a rerun starts afresh (with --resume, from the newest checkpoint "
        "if there is one)"
    )
    json_log = os.environ.get("STREAMGD_LOG_FORMAT") == "json"
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            json_log = args[i + 1] == "json"
        elif arg.startswith("--log-format="):
            json_log = arg.split("=", 1)[1] == "json"
    if json_log:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        record = {"event": "error", "time": now, "message": message}
        record |= {"exit_code": EXIT_PREEMPTED, "error": "Interrupted"}
        sys.stderr.write(json.dumps(record) + "\n")
    else:
        sys.stderr.write(f"streamgd: error: {message}\n")
    sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    main()
