"""SIGTERM/SIGINT outside the training loop, for the console entry point.

Installed before anything heavy is imported (:func:`install`), the handler raises
:class:`~streamgd.errors.Interrupted` during start-up (imports, opening the dataset, the
statistics pass): nothing has been written then, so the run ends with exit 75 and a rerun
starts afresh. The training loop installs its own handler (checkpoint, then exit 75) and puts
this one back when it returns. Once training is over, :func:`finishing` makes signals wait: the
model and reports are written and the run exits 0, the signal noted.

This module imports nothing of streamgd but :mod:`streamgd.errors` (which imports nothing).
"""

from __future__ import annotations

import signal

from ..errors import Interrupted

__all__ = ["install", "finishing", "installed", "received"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state: dict[str, object] = {"installed": False, "finishing": False, "received": None}


def _handler(signum: int, frame: object) -> None:  # noqa: ARG001
    if _state["finishing"]:
        _state["received"] = signum
        return
    raise Interrupted(signum)


def install() -> None:
    """Make SIGTERM/SIGINT raise :class:`~streamgd.errors.Interrupted` (main thread only)."""
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _state.update(installed=True, finishing=False, received=None)


def installed() -> bool:
    return bool(_state["installed"]) and signal.getsignal(signal.SIGTERM) is _handler


def finishing() -> None:
    """Training is over: from now on a signal is noted, not acted on (the run ends as soon
    as its files are durably written, with exit 0)."""
    _state["finishing"] = True


def received() -> int | None:
    """The signal noted since :func:`finishing`, if any."""
    return _state["received"]  # type: ignore[return-value]
