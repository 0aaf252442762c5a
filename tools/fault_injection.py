"""Make the environment fail under ``streamgd fit`` and record what the job does.

Usage::

    sudo python tools/fault_injection.py [--markdown] [--only NAME[,NAME...]] [--list]

Every case runs ``python -m streamgd fit`` as a subprocess (exactly as cron or Kubernetes
would), with a real fault: a 1 MiB tmpfs filled up (ENOSPC), a read-only mount (EROFS), the job
run as the unprivileged uid 65534 (EACCES: root ignores permission bits), ``RLIMIT_FSIZE`` (EFBIG),
paths of the wrong kind, a held lock, a damaged checkpoint, temporary files of a killed write,
SIGTERM at several moments, and, where an OS-level fault is impractical, a fault injected at a
writer's seam (``os.fsync`` failing with EIO). It then checks the exit code, that stderr is one
line without a traceback, what is on disk afterwards (the earlier model and checkpoints byte for
byte, no temporary files), and what the next run does once the fault is gone. It prints a table:
failure, exit code, on disk afterwards, next run.

Mounting needs root; cases that cannot run here are listed as skipped, with the reason. The
integration test ``tests/integration/test_failure_contract.py`` runs the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = "x0,x1,x2"


# -- running the job ------------------------------------------------------------------------
@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def fit_args(data: list[str], *extra: object, epochs: int = 2) -> list[str]:
    return [
        "fit",
        *data,
        "--target",
        "y",
        "--features",
        FEATURES,
        "--epochs",
        str(epochs),
        "--batch-size",
        "256",
        "-q",
        *map(str, extra),
    ]


def streamgd(
    *args: str, preexec: Callable[[], None] | None = None, bootstrap: str | None = None
) -> Run:
    """``python -m streamgd ARGS`` (or ``python -c BOOTSTRAP ARGS``, to patch a seam first)."""
    head = ["-c", bootstrap] if bootstrap else ["-m", "streamgd"]
    proc = subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        preexec_fn=preexec,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _without_root_powers() -> None:
    """Stay uid 0 but drop the capabilities that let root ignore permission bits (dropped from
    the bounding set, so the exec that follows keeps none of them): then a directory mode 0555
    refuses writes with EACCES, as it would for any user. Becoming another user (uid 65534)
    would do as well, but its interpreter may live where that user cannot read."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


# EIO from fsync at a writer's seam: no OS-level way to make a disk fail on demand
FSYNC_EIO = """
import errno, os, sys
import streamgd.archive as archive
def fsync(fd):
    raise OSError(errno.EIO, os.strerror(errno.EIO))
archive.os = type(sys)("os_with_failing_fsync")
archive.os.__dict__.update({k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
archive.os.fsync = fsync
archive.os.path = os.path
from streamgd.__main__ import main
main(sys.argv[1:])
"""


# -- the machine ----------------------------------------------------------------------------
class Skip(Exception):  # noqa: N818
    """The case cannot run on this machine (the reason says why)."""


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    if os.geteuid() != 0:
        raise Skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise Skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * size)
    return filler


def write_data(directory: Path, *, rows: int = 2000, files: int = 2, seed: int = 7) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 1.5 + rng.normal(size=rows) * 0.1
    paths = []
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        table = pa.table({**{f"x{j}": x[part, j] for j in range(3)}, "y": y[part]})
        path = directory / f"part-{i}.parquet"
        pq.write_table(table, path, row_group_size=max(1, len(part) // 4))
        paths.append(str(path))
    return paths


def temp_files(*directories: Path) -> list[str]:
    """Temporary files of streamgd's atomic writes (``.NAME.XXXXXXXX.tmp``) left anywhere."""
    found = []
    for d in directories:
        if d.is_dir():
            found += [str(p) for p in d.rglob(".*.tmp")]
    return found


def snapshot(*paths: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for p in paths:
        if p.is_file():
            files[str(p)] = p.read_bytes()
        elif p.is_dir():
            files |= {str(q): q.read_bytes() for q in sorted(p.glob("ckpt-*.npz"))}
    return files


def checkpoints(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("ckpt-*.npz")) if directory.is_dir() else []


# -- a case and what it found ---------------------------------------------------------------
@dataclass
class Outcome:
    failure: str
    expected: int
    code: int | None = None
    message: str = ""
    one_line: bool = True
    untouched: bool = True  # the earlier model and checkpoints, byte for byte
    leftovers: list[str] = field(default_factory=list)
    on_disk: str = ""
    next_run: str = ""
    next_ok: bool = True
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        if self.skipped:
            return True
        return (
            self.code == self.expected
            and self.one_line
            and self.untouched
            and not self.leftovers
            and self.next_ok
            and "Traceback" not in self.message
        )


def _error(run: Run) -> tuple[str, bool]:
    """The error line, and whether the run printed nothing else (no traceback); a usage
    error found by click's own checks comes, as ever, after the usage and a hint."""
    lines = run.lines
    clicks = run.code == 2 and bool(lines) and lines[-1].startswith("Error: ")
    one = len(lines) <= 1 or clicks
    return (lines[-1] if lines else ""), one and "Traceback" not in run.stderr


class Case:
    """A directory to work in, the data, and a trained model and checkpoints to protect."""

    def __init__(self, work: Path, data: list[str]) -> None:
        self.work, self.data = work, data
        self.out = work / "out"
        self.out.mkdir(parents=True, exist_ok=True)

    def baseline(self, model: Path, ckpt: Path, *, epochs: int = 1) -> Run:
        run = streamgd(*fit_args(self.data, "-o", model, "--checkpoint-dir", ckpt, epochs=epochs))
        if run.code != 0:
            raise RuntimeError(f"the baseline run failed: {run.stderr}")
        return run


CASES: dict[str, Callable[[Case], Outcome]] = {}


def case(name: str) -> Callable:
    def register(fn: Callable[[Case], Outcome]) -> Callable[[Case], Outcome]:
        CASES[name] = fn
        return fn

    return register


def _finish(o: Outcome, run: Run, before: dict[str, bytes], *dirs: Path) -> Outcome:
    o.code = run.code
    o.message, o.one_line = _error(run)
    o.untouched = snapshot(*map(Path, before)) == before if before else True
    o.leftovers = temp_files(*dirs)
    return o


def _next(o: Outcome, run: Run, *, expect: int = 0, note: str = "") -> None:
    o.next_run = f"exit {run.code}" + (f": {note}" if note else "")
    o.next_ok = run.code == expect


# -- no space, read-only, permissions, file size ----------------------------------------------
@case("ENOSPC writing the model (after training)")
def enospc_model(c: Case) -> Outcome:
    o = Outcome("ENOSPC writing the model (after training)", 1)
    ckpt = c.out / "m.ckpt"
    with tmpfs(c.work / "small") as small:
        model = small / "m.npz"
        c.baseline(model, ckpt)
        before = snapshot(model)
        filler = fill(small)
        run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume"))
        _finish(o, run, before, small, ckpt)
        o.on_disk = "previous model intact; finished checkpoint (records the new model's digest)"
        filler.unlink()
        again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume"), "-q")
        rewrote = model.read_bytes() != before[str(model)]
        _next(o, again, note="--resume rewrites the model from the checkpoint" if rewrote else "")
        o.next_ok = o.next_ok and rewrote
    return o


@case("ENOSPC writing a checkpoint")
def enospc_checkpoint(c: Case) -> Outcome:
    o = Outcome("ENOSPC writing a checkpoint", 1)
    model = c.out / "m.npz"
    with tmpfs(c.work / "small") as small:
        ckpt = small / "ckpt"
        c.baseline(model, ckpt)
        before = snapshot(model, ckpt)
        filler = fill(small)
        run = streamgd(
            *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3)
        )
        _finish(o, run, before, small, c.out)
        o.on_disk = "earlier checkpoints and model intact, no temporary file"
        filler.unlink()
        again = streamgd(
            *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3)
        )
        _next(o, again, note="--resume continues from the last checkpoint")
    return o


@case("ENOSPC writing --metrics-out")
def enospc_metrics(c: Case) -> Outcome:
    o = Outcome("ENOSPC writing --metrics-out", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    with tmpfs(c.work / "small") as small:
        metrics = small / "metrics.json"
        filler = fill(small)
        run = streamgd(
            *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--metrics-out", metrics)
        )
        _finish(o, run, {}, small, c.out)
        o.on_disk = "model and checkpoint written; no metrics file, no temporary file"
        filler.unlink()
        again = streamgd(
            *fit_args(
                c.data, "-o", model, "--checkpoint-dir", ckpt, "--metrics-out", metrics, "--resume"
            )
        )
        _next(o, again, note="--resume writes the metrics, trains nothing")
        o.next_ok = o.next_ok and metrics.is_file()
    return o


@case("ENOSPC writing predictions")
def enospc_predictions(c: Case) -> Outcome:
    o = Outcome("ENOSPC writing predictions", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    with tmpfs(c.work / "small") as small:
        pred = small / "pred.parquet"
        pred.write_bytes(b"yesterday's predictions")
        before = snapshot(pred)
        filler = fill(small)
        run = streamgd("predict", str(model), *c.data, "-o", str(pred))
        _finish(o, run, before, small)
        o.on_disk = "previous predictions intact, no temporary file"
        filler.unlink()
        again = streamgd("predict", str(model), *c.data, "-o", str(pred))
        _next(o, again, note="writes the predictions")
    return o


@case("checkpoint directory deleted while the job runs")
def vanished_checkpoint_dir(c: Case) -> Outcome:
    o = Outcome("checkpoint directory deleted while the job runs", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    args = fit_args(
        c.data, "-o", model, "--checkpoint-dir", ckpt, "--checkpoint-every", "2", epochs=3
    )

    deleted = []

    def delete_at_first_checkpoint(event: dict | None, _: float) -> bool:
        if not deleted and event is not None and event.get("event") == "checkpoint":
            shutil.rmtree(ckpt, ignore_errors=True)
            deleted.append(True)
        return False

    run, _ = _signal_run([a for a in args if a != "-q"], delete_at_first_checkpoint)
    # Racing the job's next write: either it makes the directory again and goes on (0), or
    # the deletion lands inside a write and the job stops naming the directory (1).
    o.expected = run.code if run.code in (0, 1) else 1
    o.code = run.code
    o.message = _json_error(run) if run.code else ""
    o.one_line = "Traceback" not in run.stderr and all(line.startswith("{") for line in run.lines)
    o.leftovers = temp_files(c.out)
    o.on_disk = (
        "the directory made again at the next checkpoint; model written"
        if run.code == 0
        else "the write that met the deletion stopped the job (one line naming the directory)"
    )
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3))
    _next(o, again, note="--resume continues (or finds the run finished)")
    return o


@case("read-only filesystem for --output")
def erofs_output(c: Case) -> Outcome:
    o = Outcome("read-only filesystem for --output", 1)
    ckpt = c.out / "m.ckpt"
    with tmpfs(c.work / "ro") as ro:
        model = ro / "m.npz"
        c.baseline(model, ckpt)
        before = snapshot(model)
        remount(ro, "ro")
        run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
        _finish(o, run, before, c.out)
        o.on_disk = "previous model intact; refused before training"
        remount(ro, "rw")
        again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
        _next(o, again, note="trains and writes the model")
    return o


@case("read-only filesystem for --checkpoint-dir")
def erofs_checkpoint(c: Case) -> Outcome:
    o = Outcome("read-only filesystem for --checkpoint-dir", 1)
    model = c.out / "m.npz"
    with tmpfs(c.work / "ro") as ro:
        ckpt = ro / "ckpt"
        c.baseline(model, ckpt)
        before = snapshot(model, ckpt)
        remount(ro, "ro")
        run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
        _finish(o, run, before, c.out)
        o.on_disk = "checkpoints and model intact"
        remount(ro, "rw")
        again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
        _next(o, again, note="trains afresh")
    return o


def _unwritable(c: Case) -> Path:
    """A directory that refuses writes to a job without root's powers."""
    if os.geteuid() != 0:
        raise Skip("dropping root's capabilities needs root")
    probe = subprocess.run(
        [sys.executable, "-c", "pass"], preexec_fn=_without_root_powers, capture_output=True
    )
    if probe.returncode != 0:
        raise Skip(f"cannot drop root's capabilities: {probe.stderr.decode().strip()}")
    locked = c.out / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)
    return locked


@case("permission denied for --output (EACCES)")
def eacces_output(c: Case) -> Outcome:
    o = Outcome("permission denied for --output (EACCES)", 1)
    locked = _unwritable(c)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    run = streamgd(
        *fit_args(c.data, "-o", locked / "m.npz", "--checkpoint-dir", ckpt),
        preexec=_without_root_powers,
    )
    _finish(o, run, {}, c.out)
    o.on_disk = "nothing written; refused before training"
    again = streamgd(
        *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt), preexec=_without_root_powers
    )
    _next(o, again, note="with a writable --output: trains")
    locked.chmod(0o755)
    return o


@case("permission denied for --checkpoint-dir (EACCES)")
def eacces_checkpoint(c: Case) -> Outcome:
    o = Outcome("permission denied for --checkpoint-dir (EACCES)", 1)
    model, ckpt = c.out / "m.npz", c.out / "locked" / "ckpt"
    c.baseline(model, ckpt)
    before = snapshot(model, ckpt)
    _unwritable(c)
    ckpt.chmod(0o555)
    run = streamgd(
        *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3),
        preexec=_without_root_powers,
    )
    _finish(o, run, before, c.out)
    o.on_disk = "earlier checkpoints and model intact"
    ckpt.chmod(0o755)
    again = streamgd(
        *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3),
        preexec=_without_root_powers,
    )
    _next(o, again, note="made writable: --resume continues")
    return o


@case("file too large (EFBIG, ulimit -f)")
def efbig(c: Case) -> Outcome:
    o = Outcome("file too large (EFBIG, ulimit -f)", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    before = snapshot(model, ckpt)
    run = streamgd(
        *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3),
        preexec=_small_file_limit,
    )
    _finish(o, run, before, c.out)
    o.on_disk = "earlier checkpoints and model intact, no temporary file"
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3))
    _next(o, again, note="--resume continues")
    return o


@case("EIO from fsync (writer seam)")
def eio_fsync(c: Case) -> Outcome:
    o = Outcome("EIO from fsync (writer seam)", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    before = snapshot(model, ckpt)
    run = streamgd(
        *fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2), bootstrap=FSYNC_EIO
    )
    _finish(o, run, before, c.out)
    o.on_disk = "earlier checkpoints and model intact, no temporary file"
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
    _next(o, again, note="trains afresh")
    return o


# -- paths of the wrong kind, locks ---------------------------------------------------------
@case("--output's parent is a file (ENOTDIR)")
def output_parent_file(c: Case) -> Outcome:
    o = Outcome("--output's parent is a file (ENOTDIR)", 2)
    (c.out / "file").write_text("x")
    run = streamgd(
        *fit_args(c.data, "-o", c.out / "file" / "m.npz", "--checkpoint-dir", c.out / "ck")
    )
    _finish(o, run, {}, c.out)
    o.on_disk = "nothing written; refused before any work"
    o.next_run = "fix the path"
    return o


@case("--output is a directory (EISDIR)")
def output_is_dir(c: Case) -> Outcome:
    o = Outcome("--output is a directory (EISDIR)", 2)
    (c.out / "dir.npz").mkdir()
    run = streamgd(*fit_args(c.data, "-o", c.out / "dir.npz", "--checkpoint-dir", c.out / "ck"))
    _finish(o, run, {}, c.out)
    o.on_disk = "nothing written; refused before any work"
    o.next_run = "fix the path"
    return o


@case("--checkpoint-dir is a file")
def checkpoint_dir_file(c: Case) -> Outcome:
    o = Outcome("--checkpoint-dir is a file", 2)
    (c.out / "ck").write_text("x")
    run = streamgd(*fit_args(c.data, "-o", c.out / "m.npz", "--checkpoint-dir", c.out / "ck"))
    _finish(o, run, {}, c.out)
    o.on_disk = "nothing written; refused before any work"
    o.next_run = "fix the path"
    return o


@case("LOCK is a directory")
def lock_is_dir(c: Case) -> Outcome:
    o = Outcome("LOCK is a directory", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    before = snapshot(model, ckpt)
    (ckpt / "LOCK").unlink()
    (ckpt / "LOCK").mkdir()
    run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
    _finish(o, run, before, c.out)
    o.on_disk = "checkpoints and model intact"
    (ckpt / "LOCK").rmdir()
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=2))
    _next(o, again, note="once removed: trains")
    return o


def _hold(path: Path) -> subprocess.Popen:
    """Another process holding an flock on ``path`` (as a running job would)."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    return proc


@case("same --output, other --checkpoint-dir, while a job runs")
def output_lock(c: Case) -> Outcome:
    o = Outcome("same --output, other --checkpoint-dir, while a job runs", 1)
    model = c.out / "m.npz"
    c.baseline(model, c.out / "a.ckpt")
    before = snapshot(model)
    holder = _hold(c.out / ".m.npz.lock")
    try:
        run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", c.out / "b.ckpt"))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    _finish(o, run, before, c.out)
    o.one_line = o.one_line and f"pid {holder.pid}" in o.message
    o.on_disk = "the running job's model untouched"
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", c.out / "b.ckpt"))
    _next(o, again, note="once the first job ended: trains")
    return o


@case("checkpoint directory locked by a running job")
def checkpoint_lock(c: Case) -> Outcome:
    o = Outcome("checkpoint directory locked by a running job", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    before = snapshot(model, ckpt)
    holder = _hold(ckpt / "LOCK")
    try:
        run = streamgd(*fit_args(c.data, "-o", c.out / "other.npz", "--checkpoint-dir", ckpt))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    _finish(o, run, before, c.out)
    o.one_line = o.one_line and f"pid {holder.pid}" in o.message
    o.on_disk = "checkpoints and model untouched"
    again = streamgd(*fit_args(c.data, "-o", c.out / "other.npz", "--checkpoint-dir", ckpt))
    _next(o, again, note="once the first job ended: trains")
    return o


# -- leftovers and damage -------------------------------------------------------------------
@case("temporary files of a killed write")
def leftovers(c: Case) -> Outcome:
    o = Outcome("temporary files of a killed write", 0)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt)
    old = time.time() - 60
    planted = [
        ckpt / ".ckpt-000000000099.npz.a1b2c3d4.tmp",
        c.out / ".m.npz.q9w8e7r6.tmp",
        c.out / ".m.history.csv.z1x2c3v4.tmp",
    ]
    foreign = c.out / ".other.npz.a1b2c3d4.tmp"  # another model's: not ours to remove
    for p in [*planted, foreign]:
        p.write_bytes(b"half")
        os.utime(p, (old, old))
    run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume"))
    o.code = run.code
    o.message, o.one_line = _error(run)
    o.leftovers = [str(p) for p in planted if p.exists()]
    o.untouched = foreign.exists()
    o.on_disk = "leftovers of this model and checkpoint directory removed; others' kept"
    o.next_run = "-"
    return o


def _flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


@case("newest checkpoint damaged (first byte flipped)")
def damaged_newest(c: Case) -> Outcome:
    o = Outcome("newest checkpoint damaged (first byte flipped)", 0)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt, epochs=2)
    newest = ckpt / checkpoints(ckpt)[-1]
    _flip_first_byte(newest)
    args = fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=2)
    run = streamgd(*[a for a in args if a != "-q"])  # not -q: the warning is the point
    o.code = run.code
    o.message = next((line for line in run.lines if "damaged" in line), "")
    o.one_line = "allow_pickle" not in run.stderr and "using the previous one" in o.message
    o.on_disk = "the damaged file kept; the run continues from the previous checkpoint"
    o.next_run = "-"
    return o


@case("every checkpoint damaged")
def damaged_all(c: Case) -> Outcome:
    o = Outcome("every checkpoint damaged", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    c.baseline(model, ckpt, epochs=2)
    for name in checkpoints(ckpt):
        _flip_first_byte(ckpt / name)
    before = snapshot(model, ckpt)
    run = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3))
    _finish(o, run, before, c.out)
    o.one_line = o.one_line and "allow_pickle" not in run.stderr
    o.on_disk = "nothing overwritten"
    again = streamgd(*fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, epochs=3))
    _next(o, again, note="without --resume: starts afresh, replaces them")
    return o


# -- signals --------------------------------------------------------------------------------
def catches_sigterm(pid: int, timeout: float = 20.0) -> bool:
    """Wait until process ``pid`` has a handler for SIGTERM (``SigCgt`` in /proc): from then
    on streamgd handles it; before, the interpreter is still starting and nothing can."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as fh:
                caught = next(line for line in fh if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return False
        if int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return True
        time.sleep(0.005)
    return False


def _signal_run(
    args: list[str], when: Callable[[dict | None, float], bool], sig: int = signal.SIGTERM
) -> tuple[Run, bool]:
    """Run the job with a JSON log, send ``sig`` once ``when(event, seconds)`` says so (event:
    the last JSON event, None before the first); returns the run and whether it was sent."""
    with subprocess.Popen(
        [sys.executable, "-m", "streamgd", *args, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    ) as proc:
        start, sent, lines = time.monotonic(), False, []
        assert proc.stderr is not None and proc.stdout is not None
        if when(None, 0.0):
            # as soon as the entry point has its handlers, within the imports (about a
            # second); before (the interpreter's first ~50 ms) nothing can catch a signal
            catches_sigterm(proc.pid)
            proc.send_signal(sig)
            sent = True
        for line in proc.stderr:
            lines.append(line)
            if sent:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if when(event, time.monotonic() - start):
                proc.send_signal(sig)
                sent = True
        out = proc.stdout.read()
        code = proc.wait(timeout=120)
    return Run(code, out, "".join(lines)), sent


def _json_error(run: Run) -> str:
    for line in reversed(run.lines):
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "error":
                return event.get("message", "")
    return run.lines[-1] if run.lines else ""


def _signal_case(c: Case, name: str, when: Callable, expected: int, rows: int = 2000) -> Outcome:
    o = Outcome(name, expected)
    data = c.data if rows <= 2000 else write_data(c.work / "big", rows=rows, files=4)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    args = fit_args(data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3)
    run, _ = _signal_run([a for a in args if a != "-q"], when)
    o.code = run.code
    o.message = _json_error(run) if run.code else ""
    o.one_line = "Traceback" not in run.stderr and all(line.startswith("{") for line in run.lines)
    o.leftovers = temp_files(c.out)
    found = checkpoints(ckpt)
    o.on_disk = ("model written; " if model.exists() else "no model; ") + (
        f"{len(found)} checkpoint(s)" if found else "no checkpoint"
    )
    if expected == 0:
        o.next_ok = model.exists()
        o.next_run = "-"
        return o
    again = streamgd(*args)
    _next(o, again, note="--resume " + ("continues" if found else "starts afresh"))
    return o


def _event(name: str) -> Callable[[dict | None, float], bool]:
    return lambda event, _: event is not None and event.get("event") == name


@case("SIGTERM right after start (imports)")
def sigterm_start(c: Case) -> Outcome:
    return _signal_case(c, "SIGTERM right after start (imports)", lambda e, t: e is None, 75)


@case("SIGTERM during the statistics pass")
def sigterm_stats(c: Case) -> Outcome:
    o = _signal_case(c, "SIGTERM during the statistics pass", _event("start"), 75, rows=1_500_000)
    o.next_ok = o.next_ok and "before training began" in o.message
    return o


@case("SIGTERM during training")
def sigterm_training(c: Case) -> Outcome:
    return _signal_case(c, "SIGTERM during training", _event("epoch"), 75)


@case("SIGTERM after the model was written")
def sigterm_after(c: Case) -> Outcome:
    return _signal_case(c, "SIGTERM after the model was written", _event("finish"), 0)


# -- inputs: files replaced, extreme values, odd files -------------------------------------
def _replace_data(c: Case, seed: int) -> None:
    """Replace every input file (same names, sizes of the same order, same layout, other
    values) the way an upstream job does: written aside, then ``os.replace``."""
    fresh = write_data(c.work / f"upstream-{seed}", seed=seed, rows=_rows(c), files=len(c.data))
    for new, old in zip(fresh, c.data, strict=True):
        os.replace(new, old)


def _rows(c: Case) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in c.data)


@case("input file replaced between runs (--resume)")
def swapped_between_runs(c: Case) -> Outcome:
    o = Outcome("input file replaced between runs (--resume)", 1)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    args = fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=3)
    stopped, _ = _signal_run([a for a in args if a != "-q"], _event("epoch"))
    if stopped.code != 75:
        raise RuntimeError(f"the interrupted run ended with {stopped.code}: {stopped.stderr}")
    before = snapshot(ckpt)
    _replace_data(c, seed=8)
    _finish(o, streamgd(*args), before, c.out)
    o.on_disk = "checkpoints intact; no model"
    _next(
        o,
        streamgd(*[a for a in args if a != "--resume"]),
        note="without --resume: trains on the new files",
    )
    return o


@case("input file replaced during the run")
def swapped_mid_run(c: Case) -> Outcome:
    o = Outcome("input file replaced during the run", 1)
    c.data = write_data(c.work / "big", rows=400_000, files=2)
    model, ckpt = c.out / "m.npz", c.out / "m.ckpt"
    # epochs enough (~0.15 s each) that the run is still reading when the replacement lands
    args = fit_args(c.data, "-o", model, "--checkpoint-dir", ckpt, "--resume", epochs=40)
    replaced = []

    def when(event: dict | None, _: float) -> bool:
        if event is not None and event.get("event") == "epoch" and not replaced:
            _replace_data(c, seed=9)  # during the second epoch's first reads, or before them
            replaced.append(True)
        return False  # no signal: the replacement is the fault

    run, _ = _signal_run([a for a in args if a != "-q"], when)
    o.code = run.code
    o.message = _json_error(run) if run.code else ""
    o.one_line = "Traceback" not in run.stderr
    o.leftovers = temp_files(c.out)
    o.on_disk = ("model written (!)" if model.exists() else "no model") + "; checkpoints kept"
    _next(
        o,
        streamgd(*[a for a in args if a != "--resume"]),
        note="without --resume: trains on the new files",
    )
    return o


def _data_case(
    c: Case,
    name: str,
    expected: int,
    table: pa.Table,
    *,
    csv_text: bytes | None,
    fix: Callable[[Path], list[str]] | None = None,
    **fit: object,
) -> Outcome:
    """A job on one odd file: the exit code and message, and (for a refusal) that the next run
    on the corrected file trains."""
    o = Outcome(name, expected)
    path = c.work / ("odd.csv" if csv_text is not None else "odd.parquet")
    if csv_text is not None:
        path.write_bytes(csv_text)
    else:
        pq.write_table(table, path)
    model = c.out / "m.npz"
    extra = [x for k, v in fit.items() for x in (f"--{k.replace('_', '-')}", v)]
    run = streamgd(*fit_args([str(path)], "-o", model, *extra))
    _finish(o, run, {}, c.out)
    o.on_disk = "model written" if model.exists() else "nothing written"
    if expected != 0 and fix is not None:
        _next(o, streamgd(*fit_args(fix(path), "-o", model)), note="on the corrected file")
    else:
        o.next_run = "-"
    return o


def _xy(rows: int = 500, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    return {**{f"x{j}": x[:, j] for j in range(3)}, "y": x @ np.array([1.0, -2.0, 0.5])}


def _rewrite(columns: dict[str, np.ndarray]) -> Callable[[Path], list[str]]:
    def fix(path: Path) -> list[str]:
        good = path.with_name("fixed.parquet")
        pq.write_table(pa.table(columns), good)
        return [str(good)]

    return fix


@case("a value of 1e300 in a feature")
def extreme_value(c: Case) -> Outcome:
    cols = _xy()
    bad = {**cols, "x1": cols["x1"].copy()}
    bad["x1"][123] = 1e300
    return _data_case(
        c, "a value of 1e300 in a feature", 1, pa.table(bad), csv_text=None, fix=_rewrite(cols)
    )


def _csv(cols: dict[str, np.ndarray], *, header: list[str] | None = None) -> str:
    names = header or list(cols)
    rows = zip(*cols.values(), strict=True)
    return "\n".join([",".join(names), *(",".join(f"{v:.6g}" for v in r) for r in rows)]) + "\n"


@case("a CSV number column with a bad token")
def csv_bad_token(c: Case) -> Outcome:
    cols = _xy()
    lines = _csv(cols).splitlines()
    lines[52] = lines[52].replace(lines[52].split(",")[2], "abc", 1)
    return _data_case(
        c,
        "a CSV number column with a bad token",
        1,
        pa.table(cols),
        csv_text=("\n".join(lines) + "\n").encode(),
        fix=_rewrite(cols),
    )


@case("CSV with duplicate column names")
def csv_duplicate_names(c: Case) -> Outcome:
    cols = _xy()
    text = _csv(cols, header=["x0", "x1", "x1", "y"])
    return _data_case(
        c,
        "CSV with duplicate column names",
        1,
        pa.table(cols),
        csv_text=text.encode(),
        fix=_rewrite(cols),
    )


@case("a UTF-16 CSV (with BOM)")
def csv_utf16(c: Case) -> Outcome:
    text = _csv(_xy())
    return _data_case(c, "a UTF-16 CSV (with BOM)", 0, pa.table({}), csv_text=text.encode("utf-16"))


@case("int64 values beyond 2^53")
def big_integers(c: Case) -> Outcome:
    cols = _xy()
    big = {**cols, "x2": (np.arange(len(cols["y"]), dtype=np.int64) + (1 << 60))}
    return _data_case(c, "int64 values beyond 2^53", 0, pa.table(big), csv_text=None)


# -- running them ---------------------------------------------------------------------------
def run_case(name: str, work: Path) -> Outcome:
    work.mkdir(parents=True, exist_ok=True)
    c = Case(work, write_data(work / "data"))
    try:
        return CASES[name](c)
    except Skip as exc:
        return Outcome(name, 0, skipped=str(exc))


def table(outcomes: list[Outcome], *, messages: bool = True) -> str:
    """A Markdown table: failure, exit code, (the message,) on disk afterwards, next run."""
    head = ["failure", "exit code", *(["message"] if messages else []), "on disk afterwards"]
    rows = ["| " + " | ".join([*head, "next run"]) + " |", "|" + "---|" * (len(head) + 1)]
    for o in outcomes:
        if o.skipped:
            cells = [o.failure, "skipped", *([o.skipped] if messages else []), o.skipped, ""]
        else:
            code = f"{o.code}" + ("" if o.ok else f" (FAILED: expected {o.expected})")
            message = "`" + o.message.replace("|", "\\|") + "`"
            cells = [o.failure, code, *([message] if messages else []), o.on_disk, o.next_run]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names (substrings)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--markdown", action="store_true", help="no progress lines, no message column"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    wanted = [w for w in args.only.split(",") if w]
    names = [n for n in CASES if not wanted or any(w in n for w in wanted)]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="streamgd-faults-") as tmp:
        for i, name in enumerate(names):
            t = time.monotonic()
            outcomes.append(run_case(name, Path(tmp) / f"case{i}"))
            if not args.markdown:
                status = "skip" if outcomes[-1].skipped else ("ok" if outcomes[-1].ok else "FAIL")
                print(f"{status:4} {time.monotonic() - t:5.1f}s {name}", file=sys.stderr)
    print(table(outcomes, messages=not args.markdown))
    tried = [o for o in outcomes if not o.skipped]
    clean = [o for o in tried if o.ok]
    seventy = [o for o in tried if o.code == 70]
    print(
        f"\n{len(tried)} failures tried, {len(clean)} clean, {len(seventy)} exit 70, "
        f"{len(outcomes) - len(tried)} skipped"
    )
    return 0 if len(clean) == len(tried) else 1


if __name__ == "__main__":
    sys.exit(main())
