"""Reaching a Dask cluster for ``--cluster``: the spec (``local[:N]``, ``tcp://HOST:PORT``,
``file:SCHEDULER.json``), the client with clear errors for a missing install, an unreachable
scheduler and mismatched versions, and the check that the workers see the input files.

Dask is imported only here and in :mod:`.distributed`, and only when ``--cluster`` is given.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from ..errors import DataError, StreamgdError, UsageError

__all__ = [
    "CONNECT_TIMEOUT",
    "parse_cluster",
    "connect",
    "connected",
    "probe",
    "check_workers_see_files",
]


def parse_cluster(spec: str) -> tuple[str, str | int | None]:
    """``local[:N]`` | ``tcp://HOST:PORT`` | ``file:SCHEDULER.json`` -> (kind, argument)."""
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise UsageError(f"--cluster local:N needs a number of workers >= 1, got {spec!r}")
        return "local", int(n) if n else None
    if spec.startswith(("tcp://", "tls://", "ucx://")):
        return "address", spec
    if spec.startswith("file:"):
        return "file", spec[5:]
    raise UsageError(
        f"--cluster must be local[:N], tcp://HOST:PORT or file:SCHEDULER.json, got {spec!r}"
    )


CONNECT_TIMEOUT = 20.0  # seconds to reach a scheduler


def connect(spec: str, *, timeout: float | None = None):
    """A Dask client for ``spec`` (and the LocalCluster it started, if any), with clear errors
    for a missing install, an unreachable scheduler and mismatched versions."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(
            "--cluster needs Dask's distributed scheduler: pip install 'streamgd[dask]'"
        ) from None
    kind, arg = parse_cluster(spec)
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    cluster = None
    try:
        if kind == "local":
            cluster = LocalCluster(
                n_workers=arg or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # no dashboard, and the scheduler's small HTTP server on a free loopback port:
                # its default 8787 clashes (with a warning) when two local jobs share a machine
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                local_directory=tempfile.mkdtemp(prefix="streamgd-dask-"),
            )
            client = Client(cluster, timeout=timeout)
        elif kind == "file":
            if not os.path.exists(str(arg)):
                raise UsageError(f"--cluster file:{arg}: no such scheduler file")
            client = Client(scheduler_file=str(arg), timeout=timeout)
        else:
            client = Client(str(arg), timeout=timeout)
    except StreamgdError:
        raise
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise DataError(f"cannot reach the Dask scheduler at {spec}: {exc}") from None
    try:
        client.get_versions(check=True)
    except ValueError as exc:  # distributed's report of mismatched package versions
        client.close()
        if cluster is not None:
            cluster.close()
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"the Dask client and workers disagree on versions: {first}") from None
    return client, cluster



@contextlib.contextmanager
def connected(spec: str, paths: tuple[str, ...], fmt: str) -> Iterator[Any]:
    """A client of the cluster ``spec`` whose workers are checked to see ``paths``; closed on
    the way out, with the local cluster it started (if any)."""
    client, local = connect(spec)
    try:
        check_workers_see_files(client, paths, fmt)
        yield client
    finally:
        client.close()
        if local is not None:
            local.close()


def probe(paths: tuple[str, ...], fmt: str) -> str | None:
    """Run on a worker: can it open every input file?"""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if missing[1:] else ""
        return f"cannot see {missing[0]}{more}"
    return None


def check_workers_see_files(client, paths: tuple[str, ...], fmt: str) -> None:
    """Workers must see the same paths as the driver (shared storage)."""
    if any("://" in p for p in paths):
        return  # remote filesystems are checked when opened
    # A worker that dies while it is asked (its connection closes: an OSError) reads nothing
    # and gets no task; the rounds go to the others, so that is no reason to stop.
    answers = client.run(probe, paths, fmt, on_error="return")
    for worker, problem in sorted(answers.items(), key=lambda item: item[0]):
        if isinstance(problem, OSError):
            continue
        if isinstance(problem, BaseException):
            raise problem
        if problem:
            raise DataError(
                f"Dask worker {worker} {problem}: workers must see the input files at the same "
                "paths as this process (shared storage)"
            )
