"""External shuffle: rewrite a dataset as Parquet files in a uniformly random row order, out
of core.

A shuffle buffer of ``k`` rows cannot mix data that is sorted or clustered over far more than
``k`` rows: every batch still comes from a narrow slice of the order. :func:`shuffle_files`
rewrites such data once, in memory bounded by a budget, with the classic two-pass external
shuffle:

1. *Scatter.* Stream the input unit by unit (a row group or a CSV block) and send every row to
   one of ``B`` bucket files, chosen uniformly at random; each bucket is an Arrow IPC stream in
   a temporary directory inside ``out_dir``.
2. *Permute.* Read each bucket whole, permute its rows uniformly and append them to the output,
   bucket after bucket, as files of at most ``rows_per_file`` rows.

Scattering uniformly and then permuting every bucket gives a uniformly random permutation of
all rows: given the bucket sizes, each assignment of rows to buckets is equally likely, and each
bucket's order is uniform and independent of the others. A bucket that turns out larger than the
budget (a low estimate, bad luck) is scattered again into sub-buckets the same way.

Every random draw comes from ``numpy.random.default_rng([seed, stream, *bucket key])``, so the
output, byte for byte, is a function of the input, the seed and the parameters.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .archive import atomic_write, fsync_dir
from .errors import StreamgdError, UsageError
from .part_writer import PartWriter
from .sources import CsvOptions, Dataset, HandleCache, open_dataset

__all__ = ["MANIFEST", "MAX_BUCKETS", "bucket_count", "estimate_bytes", "shuffle_files"]

MANIFEST = "_streamgd_shuffle.json"  # "_": skipped when the directory is read as a dataset
MAX_BUCKETS = 512  # open bucket writers (file descriptors) at once
_TEMP_PREFIX = ".streamgd-shuffle-"  # "."-prefixed: skipped when the directory is read
_MAX_DEPTH = 4  # re-scatters of one bucket before a bucket too big to split is read anyway
_COMPRESSED_CSV_RATIO = 5  # assumed decoded bytes per byte of a .gz/.bz2/.zst CSV file
_SCATTER_STREAM = 0x53434154  # "SCAT": independent random streams for the two passes
_PERMUTE_STREAM = 0x5045524D  # "PERM"


@dataclass(frozen=True)
class _Bucket:
    """One bucket file: its rows, their decoded (Arrow) size, and its key, the bucket indices
    from the first scatter down (``(3,)``, or ``(3, 1)`` for a sub-bucket of bucket 3)."""

    path: str
    rows: int
    nbytes: int
    key: tuple[int, ...]


def bucket_count(total_bytes: int, budget_bytes: int) -> int:
    """Buckets for ``total_bytes`` of data: ``2 * ceil(total / budget)``, between 1 and
    :data:`MAX_BUCKETS`. Twice the minimum, so that the expected bucket is half the budget and
    random variation or a low estimate seldom pushes one over it (which costs a re-scatter).

    >>> bucket_count(40 << 20, 8 << 20), bucket_count(0, 8 << 20), bucket_count(1 << 40, 1 << 20)
    (10, 1, 512)
    """
    return max(1, min(MAX_BUCKETS, 2 * math.ceil(total_bytes / budget_bytes)))


def estimate_bytes(dataset: Dataset) -> int:
    """The dataset's size once decoded, estimated from metadata: a Parquet file's uncompressed
    row-group sizes, a CSV file's size (times 5 when compressed; 0 when its filesystem does
    not say). Numbers take fewer bytes decoded than as text, so CSV estimates err high;
    Parquet ones are close for plain columns and low for dictionary-encoded ones. A low
    estimate costs time, not memory: the permute pass scatters a bucket over the budget
    again."""
    total, handles = 0, HandleCache()  # opens local files and URIs alike
    for f in dataset.files:
        if f.format == "parquet":
            md = handles.parquet(f.path).metadata
            total += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        else:
            compressed = f.path.lower().split("?")[0].endswith((".gz", ".bz2", ".zst"))
            total += max(f.size, 0) * (_COMPRESSED_CSV_RATIO if compressed else 1)
    return total


def shuffle_files(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    csv: CsvOptions | None = None,
    seed: int = 0,
    rows_per_file: int = 1_000_000,
    row_group_size: int = 131_072,
    memory_budget_mb: float = 256,
    buckets: int | None = None,
) -> dict:
    """Write the rows of ``paths`` to ``out_dir`` in a uniformly random order, out of core.

    The output is snappy Parquet files ``part-00000.parquet``, ``part-00001.parquet``, ... of
    ``rows_per_file`` rows (the last one fewer; no rows at all give one empty file) in row
    groups of exactly ``row_group_size`` rows (but the last of each file), with every column
    of the dataset's unified schema and its Arrow type (:func:`~streamgd.sources.open_dataset`:
    CSV integers are float64, numeric types that differ between files are widened), and a
    manifest ``_streamgd_shuffle.json`` (files, rows, settings, input fingerprint) that
    streamgd skips when it reads the directory. Each row appears exactly once, and the files
    are byte for byte a function of the input, ``seed`` and the other parameters.

    Memory: about ``memory_budget_mb`` plus a few row groups (input, output and Parquet
    encoder state), whatever the input size. Disk: room for the decoded input once more,
    temporarily, inside ``out_dir``.

    ``out_dir`` is created if needed; if it exists, it must be empty or hold a previous output
    of this function, exactly the files its manifest lists (a run that crashed while renaming
    leaves such a directory too, its manifest saying ``"complete": false``); a previous output
    is replaced, and files of it that the new one does not have are removed. Nothing else is
    ever overwritten, and an input file inside ``out_dir`` is refused. Files are written in a
    temporary directory inside ``out_dir`` and renamed into place only when all are complete:
    a failure before that leaves no new file under a final name and a previous output as it
    was. A process killed outright may leave a ``.streamgd-shuffle-*`` directory behind (it is
    ignored, also by readers: delete it).

    Args:
        paths: Parquet/CSV files, globs or directories, as for :func:`open_dataset`.
        out_dir: the output directory, local.
        fmt: ``auto``, ``parquet`` or ``csv``, as for :func:`open_dataset`.
        csv: how CSV files are parsed.
        seed: the seed of every random draw (a non-negative integer).
        rows_per_file: rows per output file, at most.
        row_group_size: rows per output row group.
        memory_budget_mb: the memory budget in MiB (a positive number).
        buckets: buckets of the scatter pass (1 to :data:`MAX_BUCKETS`); default
            :func:`bucket_count` of :func:`estimate_bytes`.

    Returns:
        ``out_dir``; ``files`` (their paths, in order); ``rows``; ``buckets``; ``splits``
        (buckets over the budget that were scattered again); ``bytes_estimate`` (the input's
        estimated decoded size); ``peak_bytes_estimate`` (the most decoded data held at once:
        the current chunk and the pieces waiting for their buckets in the scatter pass, a
        bucket and an output row group in the permute pass); ``seconds``.

    Raises:
        UsageError: a bad setting, an ``out_dir`` holding other files, an input inside it.
        DataError: an input file that cannot be read or that does not match the others.
        StreamgdError: the output cannot be written (a full disk, say).
    """
    start = time.perf_counter()
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    _check_settings(seed, rows_per_file, row_group_size, memory_budget_mb, buckets)
    budget = int(memory_budget_mb * (1 << 20))
    dataset = open_dataset([os.fspath(p) for p in paths], fmt, csv)
    out_dir = os.fspath(out_dir)
    previous = _previous_output(out_dir)
    _check_inputs_outside(dataset, out_dir)
    created = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    total = estimate_bytes(dataset)
    n_buckets = bucket_count(total, budget) if buckets is None else buckets
    with _scratch(out_dir, created=created) as work:
        staged, stats = _shuffle_into(
            dataset,
            work,
            n_buckets=n_buckets,
            seed=seed,
            budget=budget,
            rows_per_file=rows_per_file,
            row_group_size=row_group_size,
        )
        manifest = {
            "format": "streamgd-shuffle",
            "version": 1,
            "rows": stats["rows"],
            "seed": seed,
            "buckets": n_buckets,
            "rows_per_file": rows_per_file,
            "row_group_size": row_group_size,
            "memory_budget_mb": memory_budget_mb,
            "input": dataset.fingerprint(),
        }
        _publish(staged, out_dir, stats["files"], previous, manifest)
    return {
        "out_dir": out_dir,
        "files": [os.path.join(out_dir, name) for name in stats["files"]],
        "rows": stats["rows"],
        "buckets": n_buckets,
        "splits": stats["splits"],
        "bytes_estimate": total,
        "peak_bytes_estimate": stats["peak"],
        "seconds": time.perf_counter() - start,
    }


@contextlib.contextmanager
def _scratch(out_dir: str, *, created: bool) -> Iterator[str]:
    """A scratch directory inside ``out_dir``, always removed; on failure ``out_dir`` too when
    this run created it (and it is empty), and an OSError becomes a StreamgdError."""
    work = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=out_dir)
    done = False
    try:
        yield work
        done = True
    except OSError as exc:  # a full disk, say; reading errors are DataErrors already
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StreamgdError(f"{out_dir}: cannot write the shuffled output ({reason})") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and not done:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only if empty


def _shuffle_into(
    dataset: Dataset,
    work: str,
    *,
    n_buckets: int,
    seed: int,
    budget: int,
    rows_per_file: int,
    row_group_size: int,
) -> tuple[str, dict]:
    """Both passes, in the scratch directory ``work``: the directory of the finished files,
    and ``files`` (their names), ``rows``, ``splits`` and ``peak`` (bytes)."""
    staged = os.path.join(work, "out")
    os.mkdir(staged)
    rng = np.random.default_rng([seed, _SCATTER_STREAM])
    first, peak = _scatter(_input_tables(dataset), n_buckets, rng, work, dataset.schema, budget, ())
    stats = {"peak": peak, "splits": 0}
    out = PartWriter(staged, dataset.schema, rows_per_file, row_group_size)
    try:
        for bucket in first:
            _permute(bucket, out, seed=seed, budget=budget, work=work, stats=stats)
        stats["files"] = out.close()
    finally:
        out.abort()
    stats["rows"] = out.rows
    return staged, stats


def _check_settings(
    seed: int, rows_per_file: int, row_group_size: int, budget_mb: float, buckets: int | None
) -> None:
    def integer(value) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if not integer(seed) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("rows_per_file", rows_per_file), ("row_group_size", row_group_size)):
        if not integer(value) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if (
        not isinstance(budget_mb, int | float)
        or isinstance(budget_mb, bool)
        or not math.isfinite(budget_mb)
        or budget_mb * (1 << 20) < 1
    ):
        raise UsageError(f"memory_budget_mb must be a positive number, got {budget_mb!r}")
    if buckets is not None and (not integer(buckets) or not 1 <= buckets <= MAX_BUCKETS):
        raise UsageError(
            f"buckets must be an integer from 1 to {MAX_BUCKETS} (or None), got {buckets!r}"
        )


# -- the output directory -------------------------------------------------------------------
def _check_inputs_outside(dataset: Dataset, out_dir: str) -> None:
    """Refuse inputs inside ``out_dir``: a rerun of ``shuffle data -o data/shuffled`` would
    read the previous output as input, and double every row."""
    inside = os.path.join(os.path.realpath(out_dir), "")
    for f in dataset.files:
        if "://" not in f.path and os.path.realpath(f.path).startswith(inside):
            raise UsageError(
                f"{f.path}: an input file is inside the output directory {out_dir}; "
                "write the output somewhere else"
            )


def _previous_output(out_dir: str) -> list[str]:
    """The files of a previous output in ``out_dir`` that this run replaces (none for a
    missing or empty directory); a :class:`UsageError` for a directory holding anything else.
    Temporary files of this module (an interrupted run's) are ignored."""
    if not os.path.exists(out_dir):
        return []
    if not os.path.isdir(out_dir):
        raise UsageError(f"{out_dir}: the output directory is a file")
    ours = (_TEMP_PREFIX, f".{MANIFEST}.")
    names = sorted(n for n in os.listdir(out_dir) if not n.startswith(ours))
    if not names:
        return []
    listed = _manifest_files(out_dir)
    unexpected = [n for n in names if n != MANIFEST and n not in (listed or ())]
    if listed is None or unexpected:
        found = unexpected or names
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise UsageError(
            f"{out_dir}: the output directory is not empty and does not hold only a previous "
            f"shuffle output ({MANIFEST} and the files it lists); found {shown}"
        )
    return [n for n in names if n != MANIFEST]


def _manifest_files(out_dir: str) -> set[str] | None:
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as fh:
            meta = json.load(fh)
        files = meta["files"] if meta.get("format") == "streamgd-shuffle" else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(n, str) for n in files):
        return None
    return {n for n in files if os.path.basename(n) == n}  # plain names only


def _publish(staged: str, out_dir: str, names: list[str], previous: list[str], meta: dict):
    """Rename the finished files into place. The manifest first lists old and new files
    (``complete: false``), so that a crash while renaming leaves a directory the next run
    may overwrite; it lists the new files only once they are all in place."""

    def manifest(files: list[str], complete: bool) -> None:
        text = json.dumps({**meta, "complete": complete, "files": files}, indent=1) + "\n"
        atomic_write(os.path.join(out_dir, MANIFEST), lambda fh: fh.write(text.encode()))

    manifest(sorted(set(previous) | set(names)), False)
    for name in names:
        os.replace(os.path.join(staged, name), os.path.join(out_dir, name))
    for name in sorted(set(previous) - set(names)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out_dir, name))
    fsync_dir(out_dir)
    manifest(names, True)


# -- pass 1: scatter -------------------------------------------------------------------------
def _input_tables(dataset: Dataset) -> Iterator[pa.Table]:
    """The dataset's rows as tables of its unified schema, one row group or CSV block at a
    time, in file order."""
    schema, handles = dataset.schema, HandleCache()
    for unit in dataset.units:
        for piece, _ in dataset.iter_unit(unit, schema.names, handles):
            table = pa.Table.from_batches([piece]) if isinstance(piece, pa.RecordBatch) else piece
            table = table.select(schema.names)
            yield table if table.schema.equals(schema) else table.cast(schema)


def _scatter(
    tables: Iterable[pa.Table],
    n: int,
    rng: np.random.Generator,
    work: str,
    schema: pa.Schema,
    budget: int,
    key: tuple[int, ...],
) -> tuple[list[_Bucket], int]:
    """Send every row of ``tables`` to one of ``n`` new bucket files, uniformly at random;
    the buckets, and the most decoded data held at once.

    Each chunk is split with one stable sort of its bucket draws and one ``take`` per bucket.
    Pieces wait per bucket and are written as one record batch when a bucket holds
    ``budget / (2 n)`` bytes, so waiting pieces stay under half the budget in all (plus one
    piece per bucket) and bucket files do not fill up with tiny batches.

    Bucket files are Arrow IPC streams, not Parquet: an open ``ParquetWriter`` keeps ~850 bytes
    of footer metadata per column per row group until it is closed (pyarrow 26, outside Arrow's
    memory pool), and ``n`` writers of ``n`` row groups each would hold ``n * n * columns`` of
    them, 22 GB for 512 buckets of 100 columns; a dictionary encoder also keeps ~400 KB per
    column per writer. A stream writer keeps nothing, and a bucket is written once and read
    once, so Parquet's encoding and compression would only cost time.
    """
    stem = os.path.join(work, "bucket" + "".join(f"-{k}" for k in key))
    paths = [f"{stem}-{i}.arrows" for i in range(n)]
    flush_at = max(1, budget // (2 * n))
    pending: list[list[pa.Table]] = [[] for _ in range(n)]
    waiting = np.zeros(n, dtype=np.int64)  # bytes of pending pieces per bucket
    rows = np.zeros(n, dtype=np.int64)
    nbytes = np.zeros(n, dtype=np.int64)
    peak = 0

    def flush(i: int, writer: pa.ipc.RecordBatchStreamWriter) -> None:
        table = pa.concat_tables(pending[i]).combine_chunks()  # one batch, one write
        writer.write_table(table)
        rows[i] += table.num_rows
        nbytes[i] += waiting[i]
        pending[i], waiting[i] = [], 0

    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(pa.ipc.new_stream(p, schema)) for p in paths]
        for table in tables:
            draws = rng.integers(n, size=table.num_rows, dtype=np.uint16)
            order = np.argsort(draws, kind="stable")  # a radix sort for 16-bit keys
            ends = np.cumsum(np.bincount(draws, minlength=n))
            for i in np.flatnonzero(np.diff(ends, prepend=0)):
                piece = table.take(order[ends[i - 1] if i else 0 : ends[i]])
                pending[i].append(piece)
                waiting[i] += piece.nbytes
                if waiting[i] >= flush_at:
                    flush(i, writers[i])
            peak = max(peak, int(waiting.sum()) + 2 * table.nbytes)
        for i in range(n):
            if pending[i]:
                flush(i, writers[i])
    buckets = [
        _Bucket(p, int(r), int(b), (*key, i))
        for i, (p, r, b) in enumerate(zip(paths, rows, nbytes, strict=True))
    ]
    return buckets, peak


def _batches(path: str) -> Iterator[pa.Table]:
    """The record batches of a bucket file, one table each."""
    with pa.OSFile(path) as source:
        for batch in pa.ipc.open_stream(source):
            yield pa.Table.from_batches([batch])


# -- pass 2: permute -------------------------------------------------------------------------
def _permute(
    bucket: _Bucket, out: PartWriter, *, seed: int, budget: int, work: str, stats: dict
) -> None:
    """Append the rows of ``bucket`` to ``out`` in a uniformly random order, and delete it.

    A bucket over the budget is first scattered again, into twice as many sub-buckets as the
    budget requires, which are permuted in turn (at most ``_MAX_DEPTH`` levels deep: a bucket
    of a few huge rows cannot get smaller).
    """
    schema = out.schema
    if bucket.nbytes > budget and bucket.rows > 1 and len(bucket.key) <= _MAX_DEPTH:
        n = min(MAX_BUCKETS, 2 * math.ceil(bucket.nbytes / budget))
        rng = np.random.default_rng([seed, _SCATTER_STREAM, *bucket.key])
        subs, peak = _scatter(_batches(bucket.path), n, rng, work, schema, budget, bucket.key)
        os.unlink(bucket.path)
        stats["splits"] += 1
        stats["peak"] = max(stats["peak"], peak)
        for sub in subs:
            _permute(sub, out, seed=seed, budget=budget, work=work, stats=stats)
        return
    if not bucket.rows:
        os.unlink(bucket.path)
        return
    table = _read_whole(bucket.path, schema)
    os.unlink(bucket.path)
    order = np.random.default_rng([seed, _PERMUTE_STREAM, *bucket.key]).permutation(bucket.rows)
    step = out.row_group_size
    for lo in range(0, bucket.rows, step):  # a row group at a time: no second, permuted bucket
        out.write(table.take(order[lo : lo + step]))
    row_bytes = bucket.nbytes / bucket.rows
    column = bucket.nbytes / max(1, table.num_columns)  # the combine in _read_whole, roughly
    stats["peak"] = max(stats["peak"], int(bucket.nbytes + column + 2 * step * row_bytes))


def _read_whole(path: str, schema: pa.Schema) -> pa.Table:
    """A bucket file of at least one row as one table of one chunk per column.

    The extra memory is one batch and one column, not a second bucket: each batch's columns
    are copied out of the batch's body buffer (which holds every column, so it would live as
    long as any of them), and the chunks are then combined one column at a time (a ``take``
    on a column of many chunks would concatenate it anyway, and every column at once).
    """
    chunks = _copied_chunks(path, len(schema))
    columns = []
    for j in range(len(chunks)):
        parts, chunks[j] = chunks[j], []
        columns.append(pa.concat_arrays(parts))
        del parts
    return pa.Table.from_arrays(columns, schema=schema)


def _copied_chunks(path: str, width: int) -> list[list[pa.Array]]:
    """Every column's chunks in a bucket file, each copied out of its batch's buffer."""
    chunks: list[list[pa.Array]] = [[] for _ in range(width)]
    for batch in _batches(path):
        for j, column in enumerate(batch.columns):
            chunks[j].extend(pa.concat_arrays([c]) for c in column.chunks)
    return chunks
