"""Describe: what a dataset holds, for ``streamgd schema PATHS...``, in bounded memory.

:func:`describe_dataset` reports the unified schema (name, Arrow type, numeric or not), the files,
the number of rows and the nulls per column, and with a target the default features.
Parquet row counts come from the file metadata, and null counts from the row-group statistics
when every row group of the file has them for that column (else that column is streamed, row
group by row group). CSV files have no metadata: each is streamed block by block (which also
checks that every value parses with the dataset's types). Hive partition columns come from the
files' directories (see :mod:`streamgd.partitions`): their nulls are counted from the paths.
:func:`render_schema` prints it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UsageError
from .features import select_features
from .features.categorical import id_like
from .features.select import default_target
from .sources import CsvOptions, Dataset, SourceFile, is_numeric, open_parquet, open_source
from .sources.schema import missing_in

__all__ = ["describe_dataset", "render_schema"]

# how a count was obtained; the values appear in the dict and in the text
METADATA, STATISTICS, STREAMED, PATH = "metadata", "statistics", "streamed", "path"
_LABELS = {"parquet": "Parquet", "csv": "CSV"}
_FILES_SHOWN = 20  # the text lists this many files, then says how many more


def describe_dataset(
    paths: Any,
    *,
    fmt: str = "auto",
    csv: CsvOptions | None = None,
    target: str | None = None,
) -> dict:
    """Describe the dataset at ``paths`` (files, or any in-memory source
    :func:`streamgd.sources.open_source` reads) as a JSON-serialisable dict.

    Keys: ``num_files``, ``num_rows`` (exact), ``formats`` (files per format), ``files``
    (``path``, ``format``, ``size``, ``rows``, ``rows_from``: ``"metadata"`` for Parquet,
    ``"streamed"`` for CSV), ``columns`` (``name``, ``type``, ``numeric``, ``nulls``,
    ``nulls_from``: the methods used, from ``"statistics"``, ``"streamed"`` and ``"path"``;
    ``partition``: whether it is a hive partition column), ``csv`` (the parse options, when
    there are CSV files), ``target`` (as given, or else the one a fit would use by default: the
    one column named ``target``, ``label`` or ``y``; None when there is no such column),
    ``target_from`` (``"given"``, ``"default"`` or None), ``features`` (the columns that would
    be features by default: numeric, not the target; None without a target),
    ``categorical_candidates`` (the other columns of strings, dictionaries or booleans: for
    --categorical) and ``id_like`` (such columns left out of them because every value in
    the first rows of the first row group or CSV file differs: identifiers), ``notes``
    (columns widened between files).
    """
    dataset = open_source(paths, fmt, csv=csv)
    files, nulls, methods = _count_files(dataset)
    keys = dataset.partitions.names
    columns = [
        {
            "name": f.name,
            "type": str(f.type),
            "numeric": bool(is_numeric(f.type)),
            "nulls": int(nulls[f.name]),
            "nulls_from": sorted(methods[f.name]),
            "partition": f.name in keys,
        }
        for f in dataset.schema
    ]
    features = categorical = ids = None
    target_from = "given" if target is not None else None
    if target is None:  # the one fit would use by default, if there is one
        with contextlib.suppress(UsageError):
            target, target_from = default_target(dataset.schema), "default"
    if target is not None:
        features, categorical, ids = _feature_candidates(dataset, target)
    formats = {kind: sum(f.format == kind for f in dataset.files) for kind in ("parquet", "csv")}
    formats |= {f.format: sum(g.format == f.format for g in dataset.files) for f in dataset.files}
    return {
        "num_files": len(dataset.files),
        "num_rows": sum(f["rows"] for f in files),
        "formats": formats,
        "files": files,
        "columns": columns,
        "csv": dataset.csv.to_dict() if formats["csv"] else None,
        "target": target,
        "target_from": target_from,
        "features": features,
        "categorical_candidates": categorical,
        "id_like": ids,
        "notes": list(dataset.notes),
    }


def _count_files(dataset: Dataset) -> tuple[list[dict], dict[str, int], dict[str, set[str]]]:
    """One entry per file (its rows and how they were counted), the nulls per column summed
    over the files, and the methods each column's null count used."""
    keys = dataset.partitions.names
    names = [n for n in dataset.schema.names if n not in keys]  # the files' own columns
    nulls = dict.fromkeys(dataset.schema.names, 0)
    methods: dict[str, set[str]] = {name: set() for name in dataset.schema.names}
    files = []
    for index, src in enumerate(dataset.files):
        # a column this file lacks (see sources.schema.missing_in) is null in all its rows
        own = [n for n in names if src.path not in missing_in(dataset.schema.field(n))]
        if src.format == "parquet":
            rows = src.num_rows or 0
            counts, how = _parquet_nulls(dataset, index, own)
        else:
            rows, counts = _stream_counts(dataset, index, own)
            how = dict.fromkeys(own, STREAMED)
        for name in names:
            if name not in own:
                counts[name], how[name] = rows, STATISTICS if src.format == "parquet" else STREAMED
            nulls[name] += counts[name]
            methods[name].add(how[name])
        for name, value in zip(keys, dataset.partitions.of(index), strict=True):
            nulls[name] += rows if value is None else 0
            methods[name].add(PATH)
        files.append(
            {
                "path": src.path,
                "format": src.format,
                "size": int(src.size),
                "rows": int(rows),
                "rows_from": METADATA if src.format == "parquet" else STREAMED,
            }
        )
    return files, nulls, methods


def _feature_candidates(dataset: Dataset, target: str) -> tuple[list[str], list[str], list[str]]:
    """The default features for ``target``, and the columns left out for not being numeric:
    what --categorical could use, but for identifiers (every value different in the first
    row group or CSV block read: a one-hot weight per row)."""
    # labels: a target of text is a class label (softmax), not an error in a description
    chosen = select_features(dataset.schema, target, None, path=dataset.files[0].path, labels=True)
    categorical = [
        f.name
        for f in dataset.schema
        if f.name != target and f.name not in chosen and _categorical_type(f.type)
    ]
    ids = _id_columns(dataset, [n for n in categorical if n not in dataset.partitions.names])
    return (
        list(chosen),
        [name for name in categorical if name not in ids],
        [name for name in categorical if name in ids],
    )


ID_SAMPLE_ROWS = 65_536  # rows of the first unit the identifier check looks at


def _id_columns(dataset: Dataset, names: list[str]) -> set[str]:
    """The columns among ``names`` whose values in the first rows of the dataset's first
    unit (at most :data:`ID_SAMPLE_ROWS`, so a huge CSV file is not read whole) are all
    different (see :func:`~streamgd.features.categorical.id_like`)."""
    if not names or not dataset.units:
        return set()
    pieces, rows = [], 0
    reader = dataset.iter_unit(dataset.units[0], names)
    for piece, _ in reader:
        if isinstance(piece, pa.RecordBatch):  # CSV blocks
            piece = pa.Table.from_batches([piece])
        pieces.append(piece.slice(0, ID_SAMPLE_ROWS - rows))
        rows += pieces[-1].num_rows
        if rows >= ID_SAMPLE_ROWS:
            break
    reader.close()
    if not pieces:
        return set()
    sample = pa.concat_tables(pieces)
    return {name for name in names if id_like(sample.column(name))}


def _parquet_nulls(
    dataset: Dataset, index: int, names: Sequence[str]
) -> tuple[dict[str, int], dict[str, str]]:
    """Null counts of the columns ``names`` of one Parquet file, and how each was found."""
    src = dataset.files[index]
    flat = [n for n in names if not pa.types.is_nested(dataset.schema.field(n).type)]
    counts = _statistics_nulls(open_parquet(src.path).metadata, src, flat)
    rest = [name for name in names if name not in counts]
    if rest:
        counts.update(_stream_counts(dataset, index, rest)[1])
    how = {name: STREAMED if name in rest else STATISTICS for name in names}
    return counts, how


def _statistics_nulls(md: pq.FileMetaData, src: SourceFile, names: Sequence[str]) -> dict[str, int]:
    """Null counts from the row-group statistics, for the columns every row group has them
    for. ``names`` are flat columns: a nested column's leaves count nulls inside lists and
    structs, not null values of the column."""
    leaves = {}
    for j in range(md.num_columns):
        path = md.schema.column(j).path
        if path in names:  # a flat column is a leaf whose path is its name
            leaves[path] = j
    counts: dict[str, int] = {}
    for name, j in leaves.items():
        total = 0
        for g in range(len(src.row_groups)):
            stats = md.row_group(g).column(j).statistics
            if stats is None or not stats.has_null_count:
                break
            total += stats.null_count
        else:
            counts[name] = int(total)
    return counts


def _stream_counts(
    dataset: Dataset, index: int, columns: Sequence[str]
) -> tuple[int, dict[str, int]]:
    """Rows and null counts of ``columns`` in one file, reading one unit (a row group, a CSV
    block) at a time."""
    rows = 0
    counts = dict.fromkeys(columns, 0)
    for unit in dataset.units:
        if unit.file != index:
            continue
        for table, _ in dataset.iter_unit(unit, columns):
            rows += table.num_rows
            for name in columns:
                counts[name] += table.column(name).null_count
    return rows, counts


def render_schema(info: dict) -> str:
    """The text form of :func:`describe_dataset`'s dict."""
    lines = _totals(info["formats"], info["num_files"], info["num_rows"])
    lines += _column_table(info["columns"])
    if any(c.get("partition") for c in info["columns"]):
        lines += ["", "* hive partition column: its values come from the key=value directories"]
    if info.get("notes"):
        lines += [""] + [f"note: {note}" for note in info["notes"]]
    if info.get("target") is not None:
        lines += _target_lines(info)
    parse = {k: v for k, v in (info.get("csv") or {}).items() if v is not None}
    if parse and parse != {"header": True}:
        lines += ["", "CSV options: " + ", ".join(f"{k}={v!r}" for k, v in parse.items())]
    lines += _file_list(info["files"])
    return "\n".join(lines)


def _totals(formats: dict[str, int], num_files: int, num_rows: int) -> list[str]:
    """Files per format and the row total, saying how the rows were counted."""
    kinds = ", ".join(f"{n} {_LABELS.get(k, k)}" for k, n in formats.items() if n)
    how = []
    if formats["parquet"]:
        how.append("Parquet from file metadata")
    if formats["csv"]:
        how.append("CSV counted by streaming every file")
    return [
        f"files: {num_files} ({kinds})",
        f"rows: {num_rows:,} ({'; '.join(how)})",
        "",
    ]


def _column_table(columns: list[dict]) -> list[str]:
    """One aligned row per column, null counts right-aligned; partition columns starred."""
    header = ("column", "type", "numeric", "nulls", "nulls from")
    table = [header] + [
        (
            c["name"] + (" *" if c.get("partition") else ""),
            c["type"],
            "yes" if c["numeric"] else "no",
            f"{c['nulls']:,}",
            "+".join(c["nulls_from"]),
        )
        for c in columns
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if i == 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _target_lines(info: dict) -> list[str]:
    """The target, the default features, and the non-numeric columns --categorical could use."""
    lines = [
        "",
        f"target: {info['target']}"
        + (" (the default: no --target given)" if info.get("target_from") == "default" else ""),
        f"default features ({len(info['features'])}, numeric columns but the target): "
        + ", ".join(info["features"]),
    ]
    if info.get("categorical_candidates"):
        lines.append(
            "not numeric, usable with --categorical: " + ", ".join(info["categorical_candidates"])
        )
    if info.get("id_like"):
        lines.append(
            "not numeric, every value different (identifiers, left out): "
            + ", ".join(info["id_like"])
        )
    return lines


def _file_list(files: list[dict]) -> list[str]:
    """The first files with their format and rows, then how many more there are."""
    lines = ["", "files:"]
    shown = files[:_FILES_SHOWN]
    width = max((len(f["path"]) for f in shown), default=0)
    for f in shown:
        lines.append(f"  {f['path'].ljust(width)}  {f['format']:<7}  {f['rows']:,} rows")
    if len(files) > len(shown):
        lines.append(f"  ... and {len(files) - len(shown)} more")
    return lines


def _categorical_type(typ: pa.DataType) -> bool:
    """Strings, dictionaries and booleans: values that can be categories but not numbers."""
    return (
        pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_dictionary(typ)
        or pa.types.is_boolean(typ)
    )
