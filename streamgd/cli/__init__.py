"""The command line: a thin click layer over the Python API.

``main`` holds the group and the one place where library errors become messages and exit codes;
``fit`` the fit command; ``commands`` the others; ``options`` the shared option building blocks;
``reports`` the text summaries; ``signals`` SIGTERM/SIGINT outside the training loop.

Importing this package imports nothing else (its names load on first use), so that the console
entry point (:mod:`streamgd.__main__`) can install its signal handlers before the heavy imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cli", "main", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        group = importlib.import_module(".main", __name__)
        # as ``from .main import cli, main, run`` would: the function ``main`` hides the module
        globals().update(cli=group.cli, main=group.main, run=group.run)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
