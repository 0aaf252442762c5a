"""The command line: a thin click layer over the Python API.

``main`` holds the group and the one place where library errors become messages and exit codes;
``fit`` the fit command; ``commands`` the others; ``options`` the shared option building blocks;
``reports`` the text summaries.
"""

from .main import cli, main, run

__all__ = ["cli", "main", "run"]
