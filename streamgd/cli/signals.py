"""SIGTERM/SIGINT outside the training loop, for the console entry point.

Installed before anything heavy is imported (:func:`install`), the handler raises
:class:`~streamgd.errors.Interrupted` during start-up (imports, opening the dataset, the
statistics pass): nothing has been written then, so the run ends with exit 75 and a rerun
starts afresh. The training loop installs its own handler (checkpoint, then exit 75) and puts
this one back when it returns. Once training is over, :func:`finishing` makes signals
ignored: the model and reports are written and the run exits 0.

This module imports nothing of streamgd but :mod:`streamgd.errors` (which imports nothing).
"""

from __future__ import annotations

import signal

from ..errors import Interrupted

__all__ = ["install", "finishing", "installed"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict[str, object] = {"installed": False, "finishing": False}


def _handler(signum: int, frame: object) -> None:  # noqa: ARG001
    if _state["finishing"]:
        return
    raise Interrupted(signum)


def install() -> None:
    """Make SIGTERM/SIGINT raise :class:`~streamgd.errors.Interrupted` (main thread only)."""
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _state.update(installed=True, finishing=False)


def installed() -> bool:
    return bool(_state["installed"]) and signal.getsignal(signal.SIGTERM) is _handler


def finishing() -> None:
    """Training is over: from now on a signal is ignored (the run ends as soon as its files
    are durably written, with exit 0). Ignored at the OS level (SIG_IGN), not by a Python
    handler: the interpreter puts back the default action of signals with a Python handler
    while it shuts down, and a SIGTERM in those last milliseconds would kill it."""
    _state["finishing"] = True
    if installed():
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_IGN)
