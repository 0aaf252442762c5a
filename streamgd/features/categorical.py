"""Categorical features: vocabularies, one-hot codes and the hashing trick.

A categorical column travels through the pipeline as one column of integer *codes* (exact in
float32 up to 2**24), not as one-hot columns: the shuffle buffer and the batches stay as narrow
as the raw data however many categories there are. The model keeps one weight per code (an
embedding table after the intercept, see :mod:`streamgd.step`), which is exactly a linear
model over the one-hot expansion.

Two encodings, fixed before training and saved with the model so that predict and evaluate
apply exactly the training-time one:

- **one-hot** (``vocabulary``): the ``max_categories`` most frequent values of the statistics
  pass, by count then by value; every other value, including one never seen in training,
  gets the last code, "(other)". A null is a category of its own (``None`` in the vocabulary).
- **hashing** (``bits``): code = CRC-32 of the value's text, salted with the column name,
  modulo ``2**bits``. No vocabulary, nothing unseen; collisions share a weight.

Values are compared as text (``12`` and ``"12"`` are the same category), so an integer or
dictionary column works as well as a string one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)

from ..choices import MAX_HASH_BITS
from ..errors import DataError, UsageError
from ..sources import Dataset, HandleCache

__all__ = [
    "Categorical",
    "MAX_HASH_BITS",
    "OTHER",
    "scan_categories",
    "check_categorical",
    "id_like",
    "ID_MIN_ROWS",
]

OTHER = "(other)"  # the label of the last one-hot code: rare and unseen values
# Distinct values counted exactly per column during the scan; past it the rarest are pruned
# (Misra-Gries), so memory stays bounded while the frequent values are still found.
SCAN_CAPACITY = 200_000


# A column is id-like when its values in a sample of at least this many rows are all distinct.
ID_MIN_ROWS = 20


def id_like(col: pa.ChunkedArray | pa.Array) -> bool:
    """Whether ``col`` (a sample of a column) looks like an identifier: at least
    ``ID_MIN_ROWS`` non-null values, every one different. One-hot encoding such a column
    gives each row a weight of its own, which fits nothing that generalises.

    >>> id_like(pa.array([f"r{i}" for i in range(25)]))
    True
    >>> id_like(pa.array(["a", "b"] * 20))
    False
    """
    import pyarrow.compute as pc

    values = as_text(col).drop_null()
    return len(values) >= ID_MIN_ROWS and len(pc.unique(values)) == len(values)


def as_text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one string array (nulls kept): how categories are compared."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return col


@dataclass(frozen=True)
class Categorical:
    """How one categorical column is encoded: a vocabulary (one-hot) or ``bits`` (hashing)."""

    name: str
    vocabulary: tuple[str | None, ...] | None = None
    bits: int | None = None
    # one-hot: rows of each code in the scan, "(other)" last (None in older model files)
    counts: tuple[int, ...] | None = None
    # an interaction (see .interactions): the crossed categorical columns, and for one slope
    # per category the numeric feature each code weight multiplies
    parts: tuple[str, ...] | None = None
    slope: str | None = None

    @property
    def size(self) -> int:
        """Number of codes (weights): the vocabulary plus "(other)", or ``2**bits``."""
        if self.bits is not None:
            return 1 << self.bits
        return len(self.vocabulary or ()) + 1

    def labels(self) -> list[str]:
        """A readable name per code, ``name=value`` (one-hot) or ``name#bucket`` (hashing);
        for an interaction ``a=x*b=y`` (``a*b#bucket``), a slope prefixed by ``feature|``."""
        if self.parts is not None:
            return _interaction_labels(self)
        if self.bits is not None:
            return [f"{self.name}#{i}" for i in range(self.size)]
        values = ["(null)" if v is None else v for v in self.vocabulary or ()]
        return [f"{self.name}={v}" for v in [*values, OTHER]]

    def encode(self, col: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """The codes of a column's values, int64."""
        import pyarrow.compute as pc

        text = as_text(col)
        if self.bits is not None:
            # hash each distinct value once: a chunk rarely has as many values as rows
            encoded = pc.dictionary_encode(text, null_encoding="encode")
            salt = zlib.crc32(self.name.encode())
            mask = self.size - 1
            hashes = np.fromiter(
                (
                    zlib.crc32(b"\x00" if v is None else v.encode(), salt) & mask
                    for v in encoded.dictionary.to_pylist()
                ),
                dtype=np.int64,
                count=len(encoded.dictionary),
            )
            return hashes[encoded.indices.to_numpy(zero_copy_only=False)]
        value_set = pa.array(list(self.vocabulary or ()), pa.string())
        codes = pc.index_in(text, value_set=value_set, skip_nulls=False)
        return codes.fill_null(self.size - 1).to_numpy(zero_copy_only=False).astype(np.int64)

    def converter(self) -> Callable[[pa.ChunkedArray, str, int], pa.Array]:
        """The prefetcher's column converter: the codes as a float64 column."""

        def convert(col: pa.ChunkedArray, path: str, first_row: int) -> pa.Array:  # noqa: ARG001
            return pa.array(self.encode(col).astype(np.float64))

        return convert

    def neutral_other(self, weights: np.ndarray) -> np.ndarray:
        """This column's code weights with the "(other)" weight replaced, when the scan saw
        no value outside the vocabulary, by the frequency-weighted mean of the others: the
        training population's average effect of the column. Such an "(other)" weight never
        met a training row, so what training left there is drift, not data; an unseen value
        then predicts as the average value does. Otherwise (hashing, "(other)" rows seen, or
        an older model without counts) ``weights`` as they are.

        >>> c = Categorical("c", ("a", "b"), counts=(3, 1, 0))
        >>> c.neutral_other(np.array([1.0, 5.0, 9.0])).tolist()
        [1.0, 5.0, 2.0]
        """
        counts = self.counts
        if self.bits is not None or counts is None or counts[-1] or not sum(counts):
            return weights
        freq = np.asarray(counts[:-1], dtype=np.float64) / sum(counts)
        out = np.array(weights, dtype=np.float64, copy=True)
        out[-1] = np.tensordot(freq, out[:-1], axes=1)
        return out

    def to_meta(self) -> dict:
        meta = {"name": self.name, "vocabulary": self.vocabulary, "bits": self.bits}
        if self.counts is not None:
            meta["counts"] = list(self.counts)
        if self.parts is not None:
            meta["parts"] = list(self.parts)
            meta["slope"] = self.slope
        return meta

    @staticmethod
    def from_meta(d: dict) -> Categorical:
        vocab = d.get("vocabulary")
        counts = d.get("counts")
        return Categorical(
            d["name"],
            None if vocab is None else tuple(vocab),
            d.get("bits"),
            None if counts is None else tuple(int(c) for c in counts),
            None if d.get("parts") is None else tuple(d["parts"]),
            d.get("slope"),
        )


# How an interaction's categorical part travels (see .interactions): its parts' texts joined
# by SEPARATOR, a null part as NULL_PART.
SEPARATOR = "\x1f"  # ASCII unit separator
NULL_PART = "\x00"


def cross_label(parts: Sequence[str], value: str | None) -> str:
    """The readable name of a code of a cross of ``parts``: ``carrier=AA*origin=JFK``.

    >>> cross_label(("a", "b"), "x" + SEPARATOR + NULL_PART)
    'a=x*b=(null)'
    """
    if len(parts) == 1:
        return f"{parts[0]}={'(null)' if value is None else value}"
    values = (value or "").split(SEPARATOR)
    return "*".join(
        f"{p}={'(null)' if v == NULL_PART else v}" for p, v in zip(parts, values, strict=True)
    )


def _interaction_labels(c: Categorical) -> list[str]:
    """Labels of an interaction's codes (see :meth:`Categorical.labels`)."""
    parts = c.parts or ()
    head = "" if c.slope is None else f"{c.slope}|"
    if c.bits is not None:
        return [f"{head}{'*'.join(parts)}#{i}" for i in range(c.size)]
    labels = [cross_label(parts, v) for v in c.vocabulary or ()]
    return [f"{head}{label}" for label in [*labels, f"{'*'.join(parts)}={OTHER}"]]


def check_categorical(schema: pa.Schema, names: Sequence[str], target: str, *, path: str) -> None:
    """Each ``--categorical`` column exists, is not the target, and has a type whose values
    read as text (strings, dictionaries, integers, booleans, dates...)."""
    for name in names:
        if name not in schema.names:
            raise UsageError(
                f"{path}: no categorical column {name!r}; columns are: {', '.join(schema.names)}"
            )
        if name == target:
            raise UsageError(f"column {name!r} is the target; it cannot also be categorical")
        typ = schema.field(name).type
        if pa.types.is_nested(typ) or pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            raise DataError(
                f"cannot be a categorical feature (type {typ}); expected strings, "
                "a dictionary, integers or booleans",
                path=path,
                column=name,
            )


def scan_categories(
    dataset: Dataset,
    names: Sequence[str],
    order: Sequence[int],
    *,
    max_rows: int,
    max_categories: int,
    hash_bits: int | None,
    select=None,
    derive=None,
) -> tuple[Categorical, ...]:
    """The encodings of the categorical columns ``names``, from the units of the statistics
    pass (``order``, until ``max_rows`` rows; 0 reads everything), reading only those columns.

    With ``hash_bits`` nothing needs counting. Otherwise each column's values are counted, the
    rarest pruned past ``SCAN_CAPACITY`` distinct values, and the ``max_categories`` most
    frequent kept. ``select(path, rows)`` leaves out the rows it rejects (the holdout).
    ``derive``: a :class:`.interactions.Deriver` making ``names`` (interactions) from the
    columns they are made of.
    """
    if not names:
        return ()
    if hash_bits is not None:
        return tuple(Categorical(n, bits=hash_bits) for n in names)
    import pyarrow.compute as pc
    counts: dict[str, dict] = {n: {} for n in names}
    handles = HandleCache()
    seen = 0
    rows = dict.fromkeys(names, 0)  # non-pruned total per column, for the "(other)" count
    for index in order:
        unit = dataset.units[index]
        path = dataset.files[unit.file].path
        read = list(names) if derive is None else derive.sources(names)
        for table, first_row in dataset.iter_unit(unit, read, handles):
            if derive is not None:
                table = derive(table, names)
            if select is not None:
                keep = select(path, first_row + np.arange(table.num_rows))
                table = table.filter(pa.array(keep))
            seen += table.num_rows
            for name in names:
                rows[name] += table.num_rows
                tally = counts[name]
                for item in pc.value_counts(as_text(table.column(name))).to_pylist():
                    tally[item["values"]] = tally.get(item["values"], 0) + item["counts"]
                if len(tally) > SCAN_CAPACITY:
                    counts[name] = _prune(tally, SCAN_CAPACITY // 2)
        if max_rows and seen >= max_rows:
            break
    out = []
    for name in names:
        tally = counts[name]
        ranked = sorted(tally, key=lambda v: (-tally[v], v is None, v or ""))
        kept = ranked[:max_categories]
        per_code = [tally[v] for v in kept]
        # pruned counts are lower bounds: then the rest is positive, as it should be
        per_code.append(rows[name] - sum(per_code))
        out.append(Categorical(name, vocabulary=tuple(kept), counts=tuple(per_code)))
    return tuple(out)


def _prune(tally: dict, keep: int) -> dict:
    """Misra-Gries: subtract the (keep+1)-th largest count from every count, drop the values
    left at zero or below. A value more frequent than 1/keep of the rows always survives."""
    cut = sorted(tally.values(), reverse=True)[keep]
    return {v: c - cut for v, c in tally.items() if c > cut}
