"""The settings that say which columns are read and how rows reach the model: the target,
features, categorical encodings, weights, the shuffle, the statistics pass, the policies for
missing, infinite and extreme values, and how CSV files are parsed.

:class:`DataSettings` is a base of :class:`~streamgd.config.FitConfig` (its fields are
FitConfig's first settings); new feature-construction settings belong here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Only light modules here (see config.py).
from .choices import (
    FORMATS,
    INFINITE_POLICIES,
    MAX_HASH_BITS,
    MISSING_POLICIES,
    OUTLIER_POLICIES,
    TEXT_NORMS,
)
from .constraints import Flag, Integer, Names, Options
from .errors import UsageError
from .settings import setting

__all__ = ["DataSettings", "csv_options_from"]


@dataclass(frozen=True)
class DataSettings:
    """Which columns are read and how rows reach the model (FitConfig's data settings)."""

    target: str | None = setting(
        None,
        None,
        "data",
        "Target column [default: the one column named target, label or y].",
        flags=("--target", "-y"),
    )
    features: tuple[str, ...] | None = setting(
        None,
        Names(),
        "data",
        "Feature columns, comma-separated or repeated [default: every numeric column except "
        "the target and the --categorical ones].",
        flags=("--features", "-f"),
        many="list",
    )
    categorical: tuple[str, ...] | None = setting(
        None,
        Names(),
        "data",
        "Categorical feature columns (strings, dictionaries, integers...), comma-separated or "
        "repeated: one-hot encoded with the vocabulary of the statistics pass (values outside "
        "it share an '(other)' weight, also at predict time), or hashed with --hash-bits.",
        flags=("--categorical", "-c"),
        many="list",
    )
    max_categories: int = setting(
        1000,
        Integer(1),
        "data",
        "One-hot: keep the N most frequent values of each categorical column; the rest are "
        "'(other)'.",
    )
    hash_bits: int | None = setting(
        None,
        Integer(1, MAX_HASH_BITS),
        "data",
        "Hash the categorical values into 2**N weights per column (the hashing trick: no "
        "vocabulary, for unbounded values) instead of one-hot encoding them.",
    )
    interactions: tuple[str, ...] | None = setting(
        None,
        Names("interaction terms"),
        "data",
        "Feature crosses computed while streaming, comma-separated or repeated: a*b or a*b*c "
        "(categorical x categorical: one weight per combination, like --categorical; numeric "
        "x categorical: one slope per category; numeric x numeric: the product, a new "
        "feature; a --text column x categorical: each word per category); a*b*c:pairs for "
        "every pair of the columns.",
        many="list",
        metavar="TERMS",
    )
    # -- text columns: a hashed bag of words each (see features.text)
    text: tuple[str, ...] | None = setting(
        None,
        Names(),
        "data",
        "Text columns, comma-separated or repeated: each a hashed bag of words (lower-cased, "
        "split on non-word characters) into its own 2**--text-bits weights.",
        many="list",
        metavar="COLUMN",
    )
    text_bits: int = setting(
        18,
        Integer(1, MAX_HASH_BITS),
        "data",
        "Hash each text column's tokens into 2**N weights.",
    )
    ngrams: int = setting(
        1, Integer(1, 5), "data", "Text columns: word n-grams 1..N are tokens (2: bigrams too)."
    )
    text_binary: bool = setting(
        False,
        Flag(),
        "data",
        "Text columns: a token present counts 1 however often it occurs (default: its count).",
    )
    text_norm: str = setting(
        "none",
        Options(TEXT_NORMS),
        "data",
        "Text columns: l2 divides each row's token values by their L2 norm.",
    )
    text_slots: int = setting(
        64,
        Integer(1, 4096),
        "data",
        "Text columns: distinct tokens kept per row (the first ones; the statistics pass "
        "warns how many rows had more). Each row carries 2 floats per slot.",
    )
    format: str = setting(
        "auto", Options(FORMATS), "data", "Input format; auto: by file extension."
    )
    weight: str | None = setting(
        None,
        None,  # checked by features.weights.check_weight_settings
        "data",
        "Column of per-row weights (finite, >= 0; never a feature): the objective is the "
        "weighted mean loss; evaluate weighs by it too.",
        metavar="COLUMN",
    )
    shuffle: bool = setting(
        True,
        Flag(),
        "data",
        "Shuffle row groups and rows each epoch; --no-shuffle keeps file order.",
    )
    shuffle_buffer: int = setting(65536, Integer(0), "data", "Rows held in the shuffle buffer.")
    lanes: int | None = setting(
        None,
        Integer(1),
        "data",
        "Row groups a shuffled fit reads at once, their rows interleaved [default: from the "
        "layout, 32 MiB of decoded pieces, 2 to 32; set by --memory-limit].",
    )
    piece_rows: int | None = setting(
        None,
        Integer(256),
        "data",
        "Row groups larger than this are read in slices of this many rows [default: up to "
        "262144 rows whole, larger ones in slices of 65536; set by --memory-limit].",
    )
    shuffle_run: int = setting(
        16,
        Integer(1),
        "data",
        "Rows the shuffle buffer moves together (a run of consecutive rows; 1: single rows). "
        "Runs are much cheaper to move; a batch still draws batch/run runs from the whole "
        "buffer.",
    )
    standardize: bool = setting(
        True, Flag(), "optimiser", "Scale features by mean/std from the statistics pass."
    )
    precondition: bool = setting(
        True,
        Flag(),
        "optimiser",
        "Precondition steps by the inverse feature correlation and the loss's curvature "
        "(needs --standardize).",
    )
    missing: str = setting(
        "impute",
        Options(MISSING_POLICIES),
        "data",
        "impute: skip rows with a null target, fill null features with the mean; drop: skip "
        "rows with any null; error: stop at the first null.",
    )
    infinite: str = setting(
        "error",
        Options(INFINITE_POLICIES),
        "data",
        "error: stop at the first +-inf (naming file, row and column); missing: treat "
        "infinities as missing values (then --missing applies).",
    )
    outliers: str = setting(
        "warn",
        Options(OUTLIER_POLICIES),
        "data",
        "Values more than 100 interquartile ranges from a column's median (of the statistics "
        "pass's first piece): warn: use them and say so (but stop at one more than 1e15 from "
        "the median); clip: clip them to that range; error: stop at the first.",
    )
    stats_rows: int = setting(
        250_000,
        Integer(0),
        "data",
        "Rows the statistics pass reads (a seeded sample of row groups); 0: all.",
    )
    # -- how CSV files are parsed (Parquet files ignore these); checked by sources.CsvOptions
    delimiter: str | None = setting(
        None,
        None,
        "csv",
        "CSV field delimiter, one character or 'tab' [default: ',' and a tab for .tsv files].",
    )
    header: bool = setting(
        True,
        Flag(),
        "csv",
        "Whether CSV files start with a header line; with --no-header give --columns.",
    )
    columns: tuple[str, ...] | None = setting(
        None,
        None,
        "csv",
        "Column names of header-less CSV files (comma-separated or repeated).",
        many="list",
    )
    null_values: tuple[str, ...] | None = setting(
        None,
        None,
        "csv",
        "Exactly the CSV tokens read as null, e.g. 'NA,?,' (an empty item is the empty "
        "field) [default: pyarrow's list].",
        many="list",
        allow_empty=True,
    )
    dtypes: tuple[str, ...] | None = setting(
        None,
        None,
        "csv",
        "Fix a CSV column's type (float64, float32, int64, bool, string) instead of inferring "
        "it from the first block; repeatable.",
        flags=("--dtype",),
        many="repeated",
        metavar="COLUMN=TYPE",
    )

    def csv_options(self):
        """The CSV parse options, or None when every one is the default."""
        from dataclasses import fields

        return csv_options_from({f.name: getattr(self, f.name) for f in fields(self)})


def csv_options_from(settings: dict[str, Any]):
    """``sources.CsvOptions`` from settings (a FitConfig's, or a saved model's), or None when
    they are all defaults. ``dtypes`` entries are ``"column=type"``."""
    from .sources import CsvOptions

    dtypes = {}
    for entry in settings.get("dtypes") or ():
        column, sep, kind = str(entry).partition("=")
        if not sep or not column or not kind:
            raise UsageError(f"--dtype takes column=type, got {entry!r}")
        dtypes[column.strip()] = kind.strip()
    options = CsvOptions(
        delimiter=settings.get("delimiter"),
        header=settings.get("header", True),
        columns=settings.get("columns"),
        null_values=settings.get("null_values"),
        dtypes=dtypes or None,
    )
    return None if options == CsvOptions() else options
