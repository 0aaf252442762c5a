"""Feature interactions (``--interactions a*b,c*d*e``): crosses of columns computed from each
piece of data as it streams, never written anywhere.

A term crosses two or three columns; what it becomes depends on the kinds of its parts:

- **numeric x numeric** (``x1*x2``, ``x1*x2*x3``): the product, a new numeric feature named
  after the term, with its mean and standard deviation from the statistics pass like any
  other (a missing part makes the product missing, then imputed).
- **categorical x categorical** (``carrier*origin``): a categorical column whose values are
  the tuples of values, one-hot encoded with the most frequent tuples of the statistics pass
  (``--max-categories``, the rest '(other)') or hashed with ``--hash-bits``. Its weights are
  named ``carrier=AA*origin=JFK``.
- **numeric x categorical** (``distance*carrier``, also ``x1*x2*carrier`` and
  ``distance*carrier*origin``): one slope per category (or tuple of categories): the weight
  of code ``k`` multiplies the standardised numeric part (the product of the numeric parts,
  itself then a feature). The numeric part is also a feature on its own (the overall slope;
  the per-category slopes are the deviations from it). Weights are named
  ``distance|carrier=AA``.

Derived columns are named after their term (``a*b``) and added to each Arrow table by
:class:`Deriver` before it is decoded, so the rest of the pipeline (statistics, codes, the
step, prediction) sees them as ordinary columns. The text of a cross is its parts' texts
joined by ``SEPARATOR``, a null part as ``NULL_PART``; hashing then works as for any
categorical column: CRC-32 of that text salted with the term's name, modulo ``2**bits``.

Syntax: terms are comma-separated (or the option repeated); ``a*b*c:pairs`` is shorthand for
every pair of its columns (``a*b,a*c,b*c``, like Vowpal Wabbit's ``-q``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)

from ..errors import DataError, UsageError
from ..sources import is_numeric
from .categorical import NULL_PART, SEPARATOR, Categorical, as_text, scan_categories

__all__ = [
    "Interaction",
    "Deriver",
    "parse_terms",
    "resolve",
    "extend_names",
    "encodings",
    "SEPARATOR",
    "NULL_PART",
    "MAX_DEGREE",
]

MAX_DEGREE = 3
PAIRS = ":pairs"


def parse_terms(entries: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The terms of ``--interactions`` entries, each a tuple of column names.

    >>> parse_terms(["a*b", "x*y*z:pairs"])
    (('a', 'b'), ('x', 'y'), ('x', 'z'), ('y', 'z'))

    Raises:
        UsageError: a term without ``*``, with an empty part, a column crossed with itself,
            more than ``MAX_DEGREE`` columns, or a term given twice.
    """
    terms: list[tuple[str, ...]] = []
    for entry in entries:
        text = entry.strip()
        pairs = text.endswith(PAIRS)
        body = text[: -len(PAIRS)] if pairs else text
        parts = tuple(p.strip() for p in body.split("*"))
        if len(parts) < 2 or not all(parts) or ":" in body:
            raise UsageError(
                f"--interactions: bad term {entry!r}; expected columns joined by '*', like "
                "a*b or a*b*c, or a*b*c:pairs for every pair of them"
            )
        if len(set(parts)) < len(parts):
            raise UsageError(
                f"--interactions: {entry!r} crosses a column with itself; name different columns"
            )
        if not pairs and len(parts) > MAX_DEGREE:
            raise UsageError(
                f"--interactions: {entry!r} crosses {len(parts)} columns; at most "
                f"{MAX_DEGREE} (or use {body}:pairs for every pair of them)"
            )
        terms.extend(itertools.combinations(parts, 2) if pairs else [parts])
    seen: set[frozenset[str]] = set()
    for term in terms:
        if frozenset(term) in seen:
            raise UsageError(f"--interactions: the term {'*'.join(term)} is given twice")
        seen.add(frozenset(term))
    return tuple(terms)


@dataclass(frozen=True)
class Interaction:
    """One term: its ``parts`` (column names, in the order given) and which of them are
    ``categorical``."""

    parts: tuple[str, ...]
    categorical: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "*".join(self.parts)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(p for p in self.parts if p not in self.categorical)

    @property
    def kind(self) -> str:
        """``product`` (numeric parts only), ``cross`` (categorical only) or ``slope``."""
        if not self.categorical:
            return "product"
        return "cross" if not self.numeric else "slope"

    @property
    def feature(self) -> str | None:
        """The numeric feature this term needs: the product (its own name for a product
        term) or, for a slope, its numeric part; None for a cross."""
        return None if self.kind == "cross" else "*".join(self.numeric)

    @property
    def code_column(self) -> str | None:
        """The derived text column of a cross or slope term (its categorical part)."""
        return None if self.kind == "product" else self.name

    def outputs(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Derived columns: name -> (``product`` or ``text``, the source columns)."""
        out = {}
        numeric = self.numeric
        if len(numeric) > 1:
            out["*".join(numeric)] = ("product", numeric)
        if self.categorical:
            out[self.name] = ("text", self.categorical)
        return out

    def to_meta(self) -> dict:
        return {"parts": list(self.parts), "categorical": list(self.categorical)}

    @staticmethod
    def from_meta(d: dict) -> Interaction:
        return Interaction(tuple(d["parts"]), tuple(d.get("categorical") or ()))


def resolve(
    terms: Sequence[Sequence[str]],
    schema: pa.Schema,
    *,
    target: str,
    categorical: Sequence[str] = (),
    weight: str | None = None,
    path: str = "",
) -> tuple[Interaction, ...]:
    """The interactions of parsed ``terms`` against the data's ``schema``.

    Raises:
        UsageError: a part that is no column, the target or the weight column, or a
            non-numeric column not named with ``--categorical``.
    """
    out = []
    for term in terms:
        label = "*".join(term)
        for part in term:
            if part not in schema.names:
                raise UsageError(
                    f"{path}: --interactions {label}: no column {part!r}; columns are: "
                    f"{', '.join(schema.names)}"
                )
            if part == target:
                raise UsageError(
                    f"--interactions {label}: column {part!r} is the target; it cannot be "
                    "part of an interaction"
                )
            if part == weight:
                raise UsageError(
                    f"--interactions {label}: column {part!r} is the --weight column; it "
                    "cannot be part of an interaction"
                )
            typ = schema.field(part).type
            if part not in categorical and not (is_numeric(typ) and _multipliable(typ)):
                raise UsageError(
                    f"--interactions {label}: column {part!r} is not a number (type {typ}); "
                    "name it with --categorical too"
                )
        if label in schema.names:
            raise UsageError(
                f"--interactions {label}: the data already has a column named {label!r}"
            )
        out.append(Interaction(tuple(term), tuple(p for p in term if p in categorical)))
    return tuple(out)


def _multipliable(typ: pa.DataType) -> bool:
    """Whether products take the type (times and dates are numeric features, not factors)."""
    return (
        pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_decimal(typ)
    )


def extend_names(names: Sequence[str], interactions: Sequence[Interaction]) -> tuple[str, ...]:
    """The numeric features with those the interactions need appended (products, and the
    numeric part of each slope term), each once."""
    out = list(names)
    for inter in interactions:
        feature = inter.feature
        if feature is not None and feature not in out:
            out.append(feature)
    return tuple(out)


@dataclass(frozen=True)
class Deriver:
    """Adds the interactions' derived columns to Arrow tables (those not there already)."""

    interactions: tuple[Interaction, ...]

    @property
    def outputs(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        out: dict = {}
        for inter in self.interactions:
            out.update(inter.outputs())
        return out

    def sources(self, columns: Sequence[str]) -> list[str]:
        """``columns`` with each derived one replaced by the columns it is made of."""
        outputs = self.outputs
        out: list[str] = []
        for name in columns:
            out.extend(outputs[name][1] if name in outputs else [name])
        return list(dict.fromkeys(out))

    def __call__(
        self, table: pa.Table | pa.RecordBatch, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """``table`` with the derived columns appended: those among ``columns`` (None: all)
        that it does not have yet."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        have = set(table.schema.names)
        wanted = None if columns is None else set(columns)
        for name, (kind, parts) in self.outputs.items():
            if name in have or (wanted is not None and name not in wanted):
                continue
            lacking = [p for p in parts if p not in have]
            if lacking:
                raise DataError(
                    f"input lacks column(s) {', '.join(lacking)}, which the interaction "
                    f"{name} needs"
                )
            cols = [table.column(p) for p in parts]
            table = table.append_column(name, product(cols) if kind == "product" else text(cols))
            have.add(name)
        return table


def encodings(
    dataset,
    interactions: Sequence[Interaction],
    order: Sequence[int],
    *,
    max_rows: int,
    max_categories: int,
    hash_bits: int | None,
    select=None,
) -> tuple[Categorical, ...]:
    """The encodings of the cross and slope terms' categorical parts, scanned like the
    ``--categorical`` columns (see :func:`.categorical.scan_categories`)."""
    coded = tuple(i for i in interactions if i.code_column is not None)
    found = scan_categories(
        dataset,
        [i.name for i in coded],
        order,
        max_rows=max_rows,
        max_categories=max_categories,
        hash_bits=hash_bits,
        select=select,
        derive=Deriver(coded),
    )
    return tuple(
        dataclasses.replace(c, parts=i.categorical, slope=i.feature if i.kind == "slope" else None)
        for c, i in zip(found, coded, strict=True)
    )


def product(cols: Sequence[pa.ChunkedArray]) -> pa.ChunkedArray:
    """The float64 product of numeric columns (null where any part is null)."""
    import pyarrow.compute as pc

    out = None
    for col in cols:
        values = col if pa.types.is_float64(col.type) else pc.cast(col, pa.float64(), safe=False)
        out = values if out is None else pc.multiply(out, values)
    return out


def text(cols: Sequence[pa.ChunkedArray]) -> pa.Array:
    """The text of a cross's values: one part's text as it is (nulls kept), or the parts'
    texts joined by ``SEPARATOR`` with a null part as ``NULL_PART``."""
    import pyarrow.compute as pc

    texts = [as_text(c) for c in cols]
    if len(texts) == 1:
        return texts[0]
    # one string type for the join (pandas writes large_string, Arrow readers string; a
    # piece's parts fit 32-bit offsets), so the kernel finds its inputs alike
    filled = [pc.fill_null(t.cast(pa.string()), NULL_PART) for t in texts]
    return pc.binary_join_element_wise(*filled, SEPARATOR)
