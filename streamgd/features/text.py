"""Text columns: a hashed bag of words (``--text``).

A text value is lower-cased (Unicode, Arrow's ``utf8_lower``) and split on runs of non-word
characters (``[^\\p{L}\\p{N}_]+``: Unicode letters, digits and the underscore make words, as
Python's ``\\w`` does); empty pieces are dropped, a null text has no tokens. With ``ngrams=N``
the word n-grams ``2..N`` of each row (words joined by one space) are tokens too. Each token's
bucket is ``abs(murmurhash3_32(utf8, seed=0) as int32) mod 2**bits``: the hash and bucket of
scikit-learn's ``HashingVectorizer(alternate_sign=False)`` with ``token_pattern=r"(?u)\\b\\w+\\b"``
(its default pattern drops one-character words; this tokenizer keeps them), identical in every
process and platform. A bucket's value is the row's count of its tokens (or 1 with ``binary``),
then optionally divided by the row's L2 norm (over all its buckets).

Rows are variable-length, but the pipeline moves a fixed-width float matrix (the shuffle
buffer, checkpoints, the Dask chunks), so each text column travels as ``slots`` pairs of
columns: ``slots`` bucket indices then ``slots`` values (exact in float32: indices below 2**24,
counts below 2**24). Unused slots have value 0, which adds nothing to the prediction and
nothing to any gradient. A row with more distinct buckets than ``slots`` keeps its first ones
(unigrams in text order, then bigrams...); the statistics pass counts how often that happens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa  # (pyarrow.compute where used: 7 MiB a numeric fit never needs)

from ..errors import DataError, UsageError
from ..sources import Dataset, HandleCache
from .categorical import NULL_PART, SEPARATOR, as_text

__all__ = [
    "TextColumn",
    "tokens",
    "murmur3_32",
    "buckets",
    "bag",
    "bag_sum",
    "scan_texts",
    "check_text",
    "split_terms",
]

SPLIT = r"[^\p{L}\p{N}_]+"  # runs of non-word characters (RE2 syntax, Unicode classes)
NAMED_TOKENS = 20_000  # inspect names the buckets of at most this many frequent tokens
SCAN_CAPACITY = 200_000  # distinct tokens counted exactly during the scan (then pruned)

_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def murmur3_32(strings: pa.Array, seed: int = 0) -> np.ndarray:
    """MurmurHash3 (x86, 32-bit) of each string's UTF-8 bytes, uint32, vectorised over the
    strings (one numpy pass per 4 bytes of the longest one).

    >>> murmur3_32(pa.array(["", "hello"])).tolist()  # the reference implementation's values
    [0, 613153351]
    """
    strings = strings.cast(pa.string()) if strings.type != pa.string() else strings
    n = len(strings)
    offsets_buf, data_buf = strings.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=strings.offset * 4)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    h = np.full(n, seed, dtype=np.uint32)
    blocks = lengths // 4
    for b in range(int(blocks.max()) if n else 0):
        rows = np.flatnonzero(blocks > b)
        at = starts[rows] + 4 * b
        k = _word(data, at, 4)
        k = _rotl(k * _C1, 15) * _C2
        x = _rotl(h[rows] ^ k, 13)
        h[rows] = x * np.uint32(5) + np.uint32(0xE6546B64)
    tail = lengths & 3
    rows = np.flatnonzero(tail)
    if len(rows):
        at = starts[rows] + 4 * blocks[rows]
        k = np.zeros(len(rows), np.uint32)
        for i in range(3):
            has = tail[rows] > i
            k[has] |= data[at[has] + i].astype(np.uint32) << np.uint32(8 * i)
        h[rows] ^= _rotl(k * _C1, 15) * _C2
    h ^= lengths.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _word(data: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The little-endian uint32 of ``width`` bytes of ``data`` at each offset ``at``."""
    k = np.zeros(len(at), np.uint32)
    for i in range(width):
        k |= data[at + i].astype(np.uint32) << np.uint32(8 * i)
    return k


def tokens(col: pa.ChunkedArray | pa.Array, ngrams: int = 1) -> tuple[pa.Array, np.ndarray]:
    """The tokens of a text column (flat) and the row each comes from: each row's words in
    text order, then its bigrams, ... up to ``ngrams``-grams (words joined by a space).

    >>> t, rows = tokens(pa.array(["Good, GOOD film!", None, "bad"]), ngrams=2)
    >>> t.to_pylist(), rows.tolist()
    (['good', 'good', 'film', 'bad', 'good good', 'good film'], [0, 0, 0, 2, 0, 0])
    """
    import pyarrow.compute as pc

    text = as_text(col)
    if pc.all(pc.string_is_ascii(text), min_count=0).as_py() is not False:
        words, rows = _ascii_words(text)
    else:
        parts = pc.split_pattern_regex(pc.utf8_lower(text), pattern=SPLIT)
        flat = pc.list_flatten(parts)
        parents = pc.list_parent_indices(parts)
        keep = pc.greater(pc.binary_length(flat), 0)
        words = flat.filter(keep)
        rows = parents.filter(keep).to_numpy(zero_copy_only=False).astype(np.int64)
    grams, owners = [words], [rows]
    for n in range(2, ngrams + 1):
        m = len(words) - n + 1
        if m <= 0:
            break
        start = np.flatnonzero(rows[:m] == rows[n - 1 : n - 1 + m])
        pieces = [words.take(pa.array(start + i)) for i in range(n)]
        grams.append(pc.binary_join_element_wise(*pieces, " "))
        owners.append(rows[start])
    return pa.concat_arrays([g.cast(pa.string()) for g in grams]), np.concatenate(owners)


# ASCII bytes lower-cased, and which of them make words ([a-z0-9_] after lower-casing)
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A") : ord("Z") + 1] += 32
_WORD = np.zeros(256, bool)
for _range in (("a", "z"), ("0", "9"), ("_", "_")):
    _WORD[ord(_range[0]) : ord(_range[1]) + 1] = True


def _ascii_words(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """:func:`tokens`' words of an all-ASCII string array, from its bytes with numpy (the
    regular expression split of the general case costs about 5x more): the word bytes of
    the lower-cased text, back to back, are the words; a word ends at a non-word byte or at
    the end of its row. The same words as the general case (there, Unicode letters and
    digits; in ASCII, ``[a-z0-9_]``)."""
    import pyarrow.compute as pc

    if text.null_count:
        text = pc.fill_null(text, "")
    if pa.types.is_large_string(text.type):
        text = text.cast(pa.string())
    n = len(text)
    offsets_buf, data_buf = text.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=text.offset * 4)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if data_buf is None or hi == lo:
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    data = _LOWER[np.frombuffer(data_buf, np.uint8, count=hi - lo, offset=lo)]
    word = _WORD[data]
    row_starts = offsets[:-1][offsets[:-1] < hi] - lo
    edge = np.empty(len(word) + 1, bool)  # whether a word may not run on across byte i - 1, i
    edge[0] = edge[-1] = True
    np.not_equal(word[1:], word[:-1], out=edge[1:-1])
    edge[row_starts] = True
    cuts = np.flatnonzero(edge)  # a word starts or ends at each cut
    begins, ends = cuts[:-1], cuts[1:]
    is_word = word[begins]
    begins, ends = begins[is_word], ends[is_word]
    rows = np.searchsorted(offsets[1:] - lo, begins, side="right").astype(np.int64)
    out_offsets = np.zeros(len(begins) + 1, np.int32)
    np.cumsum(ends - begins, out=out_offsets[1:])
    words = pa.StringArray.from_buffers(
        len(begins), pa.py_buffer(out_offsets), pa.py_buffer(data[word].tobytes())
    )
    return words, rows


def bucket_of(hashes: np.ndarray, bits: int) -> np.ndarray:
    """The bucket of each hash: ``abs(h as int32) mod 2**bits`` (scikit-learn's)."""
    return np.abs(hashes.view(np.int32).astype(np.int64)) & ((1 << bits) - 1)


@dataclass(frozen=True)
class TextColumn:
    """How one text column is encoded, and what its statistics-pass scan saw: ``rows``
    scanned, ``truncated`` of them with more distinct buckets than ``slots``, and ``named``:
    (bucket, token) for the buckets of the most frequent tokens (for ``inspect``)."""

    name: str
    bits: int = 18
    ngrams: int = 1
    binary: bool = False
    norm: str | None = None  # or "l2"
    slots: int = 64
    named: tuple[tuple[int, str], ...] = ()
    rows: int = 0
    truncated: int = 0
    # a cross with categorical columns (``--interactions genre*review``): ``name`` is the
    # term, ``source`` the text column, ``by`` the categorical columns; each token is then
    # the categorical values' text (joined as an interaction's, see .interactions.text), the
    # unit separator and the word, hashed into the term's own buckets
    source: str | None = None
    by: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return 1 << self.bits

    @property
    def column(self) -> str:
        """The text column the words come from."""
        return self.source or self.name

    @property
    def reads(self) -> tuple[str, ...]:
        """The data's columns this encoding reads."""
        return (self.column, *self.by)

    def labels(self) -> list[str]:
        """``name~token`` (for a cross ``genre=drama*review~token``) for the buckets named by
        the scan, else ``name#bucket``."""
        names = dict(self.named)
        label = self._label
        return [label(names[i]) if i in names else f"{self.name}#{i}" for i in range(self.size)]

    def _label(self, token: str) -> str:
        if not self.by:
            return f"{self.name}~{token}"
        *values, word = token.split(SEPARATOR)
        values = values if len(values) == len(self.by) else [SEPARATOR.join(values)]
        parts = [f"{b}={v}" for b, v in zip(self.by, values, strict=False)]
        return "*".join([*parts, f"{self.column}~{word}"])

    def tokens_of(self, table: pa.Table) -> tuple[pa.Array, np.ndarray]:
        """The tokens of a table's rows and the row of each (see :func:`tokens`), crossed
        with the ``by`` columns' values."""
        import pyarrow.compute as pc

        toks, owner = tokens(table.column(self.column), self.ngrams)
        if not self.by:
            return toks, owner
        from .interactions import text as cross_text  # (it does not import this module)

        values = cross_text([table.column(b) for b in self.by]).cast(pa.string())
        values = pc.fill_null(values, NULL_PART)
        return pc.binary_join_element_wise(values.take(pa.array(owner)), toks, SEPARATOR), owner

    def encode(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """``(buckets, values)`` of a table's rows, each (rows, slots): see :func:`buckets`."""
        toks, owner = self.tokens_of(table)
        idx, val, _ = bag(
            toks, owner, table.num_rows, bits=self.bits, binary=self.binary, norm=self.norm,
            slots=self.slots,
        )  # fmt: skip
        return idx, val

    def to_meta(self) -> dict:
        return {
            "name": self.name,
            "bits": self.bits,
            "ngrams": self.ngrams,
            "binary": self.binary,
            "norm": self.norm,
            "slots": self.slots,
            "named": [[int(b), t] for b, t in self.named],
            "rows": self.rows,
            "truncated": self.truncated,
            **({"source": self.source, "by": list(self.by)} if self.by else {}),
        }

    @staticmethod
    def from_meta(d: dict) -> TextColumn:
        return TextColumn(
            d["name"],
            int(d["bits"]),
            int(d.get("ngrams", 1)),
            bool(d.get("binary", False)),
            d.get("norm"),
            int(d.get("slots", 64)),
            tuple((int(b), str(t)) for b, t in d.get("named") or ()),
            int(d.get("rows", 0)),
            int(d.get("truncated", 0)),
            d.get("source"),
            tuple(d.get("by") or ()),
        )


def buckets(
    col: pa.ChunkedArray | pa.Array,
    *,
    bits: int,
    ngrams: int = 1,
    binary: bool = False,
    norm: str | None = None,
    slots: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A text column's hashed bag of words as fixed slots: bucket indices (rows, slots) int64,
    values (rows, slots) float64 (0 in unused slots), and each row's number of distinct
    buckets (more than ``slots``: the row was truncated to its first ``slots`` buckets, in the
    order their tokens first appear). Values are counts (1 with ``binary``), divided by the
    row's L2 norm over all its buckets with ``norm="l2"``.

    >>> idx, val, distinct = buckets(pa.array(["a b a", None]), bits=4, slots=3)
    >>> val.tolist(), distinct.tolist()
    ([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [2, 0])
    """
    toks, rows = tokens(col, ngrams)
    return bag(toks, rows, len(col), bits=bits, binary=binary, norm=norm, slots=slots)


def bag(
    toks: pa.Array,
    rows: np.ndarray,
    n: int,
    *,
    bits: int,
    binary: bool = False,
    norm: str | None = None,
    slots: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`buckets` of the ``toks`` of ``n`` rows (``rows``: the row of each token)."""
    size = 1 << bits
    key = rows * size + bucket_of(murmur3_32(toks), bits)
    order = np.argsort(key, kind="stable")  # (numpy's unique with return_index: 3x slower)
    sorted_keys = key[order]
    new = np.empty(len(key), bool)
    new[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    uniq, first = sorted_keys[starts], order[starts]
    counts = np.diff(np.append(starts, len(key)))
    row, bucket = uniq // size, uniq % size
    value = np.ones(len(uniq)) if binary else counts.astype(np.float64)
    if norm == "l2":
        value = value / np.sqrt(np.bincount(row, value * value, minlength=n))[row]
    order = np.lexsort((first, row))  # by row, then first appearance
    row, bucket, value = row[order], bucket[order], value[order]
    distinct = np.bincount(row, minlength=n)
    row_first = np.zeros(n, np.int64)  # where each row's entries start
    np.cumsum(distinct[:-1], out=row_first[1:])
    pos = np.arange(len(row)) - row_first[row]
    kept = np.flatnonzero(pos < slots)
    at = row[kept] * slots + pos[kept]
    idx = np.zeros((n, slots), np.int64)
    val = np.zeros((n, slots), np.float64)
    idx.ravel()[at] = bucket[kept]
    val.ravel()[at] = value[kept]
    return idx, val, distinct


def bag_sum(weights: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Each row's ``sum_s weights[idx[:, s]] * val[:, s]`` (per class for 2-d ``weights``):
    the linear model's part from the text slots."""
    val = val.astype(np.float64, copy=False)
    if weights.ndim == 1:
        return np.einsum("ij,ij->i", weights[idx], val)
    return np.einsum("ijk,ij->ik", weights[idx], val)


def split_terms(
    terms: Sequence[Sequence[str]], text: Sequence[str], categorical: Sequence[str]
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, str, tuple[str, ...]], ...]]:
    """The parsed ``--interactions`` terms without a ``--text`` column, and those with one as
    ``(term, text column, categorical columns)``: a text column crosses ``--categorical``
    columns only, one text column a term (see :class:`TextColumn`'s ``by``).

    >>> split_terms([("a", "b"), ("genre", "review")], ["review"], ["a", "b", "genre"])
    ((('a', 'b'),), (('genre*review', 'review', ('genre',)),))
    """
    plain, crosses = [], []
    for term in terms:
        found = [p for p in term if p in text]
        if not found:
            plain.append(tuple(term))
            continue
        others = tuple(p for p in term if p not in text)
        bad = [*found[1:], *(p for p in others if p not in categorical)]
        if bad:
            raise UsageError(
                f"--interactions {'*'.join(term)}: a --text column crosses --categorical "
                f"columns only (one text column a term); {bad[0]!r} is not one"
            )
        crosses.append(("*".join(term), found[0], others))
    return tuple(plain), tuple(crosses)


def check_text(schema: pa.Schema, names: Sequence[str], target: str, *, path: str) -> None:
    """Each ``--text`` column exists, is not the target, and holds strings."""
    for name in names:
        if name not in schema.names:
            raise UsageError(
                f"{path}: no text column {name!r}; columns are: {', '.join(schema.names)}"
            )
        if name == target:
            raise UsageError(f"column {name!r} is the target; it cannot also be a text column")
        typ = schema.field(name).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise DataError(
                f"cannot be a text column (type {typ}); expected strings", path=path, column=name
            )


def scan_texts(
    dataset: Dataset,
    texts: Sequence[TextColumn],
    order: Sequence[int],
    *,
    max_rows: int,
    select=None,
) -> tuple[TextColumn, ...]:
    """``texts`` with what the statistics pass's units (``order``, until ``max_rows`` rows;
    0: all) show: the rows truncated to ``slots`` buckets and the most frequent token of each
    bucket (among the ``NAMED_TOKENS`` most frequent), reading only the text columns."""
    if not texts:
        return ()
    import pyarrow.compute as pc

    names = list(dict.fromkeys(c for t in texts for c in t.reads))
    tallies: list[dict] = [{} for _ in texts]
    rows = [0] * len(texts)
    truncated = [0] * len(texts)
    handles = HandleCache()
    seen = 0
    for index in order:
        unit = dataset.units[index]
        path = dataset.files[unit.file].path
        for table, first_row in dataset.iter_unit(unit, names, handles):
            if select is not None:
                keep = select(path, first_row + np.arange(table.num_rows))
                table = table.filter(pa.array(keep))
            seen += table.num_rows
            for j, t in enumerate(texts):
                toks, owner = t.tokens_of(table)  # once for both uses
                keys = np.sort((owner << t.bits) + bucket_of(murmur3_32(toks), t.bits))
                keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
                distinct = np.bincount(keys >> t.bits, minlength=table.num_rows)
                rows[j] += table.num_rows
                truncated[j] += int((distinct > t.slots).sum())
                tally = tallies[j]
                for item in pc.value_counts(toks).to_pylist():
                    tally[item["values"]] = tally.get(item["values"], 0) + item["counts"]
                if len(tally) > SCAN_CAPACITY:
                    cut = sorted(tally.values(), reverse=True)[SCAN_CAPACITY // 2]
                    tallies[j] = {v: c - cut for v, c in tally.items() if c > cut}
        if max_rows and seen >= max_rows:
            break
    out = []
    for j, t in enumerate(texts):
        tally = tallies[j]
        top = sorted(tally, key=lambda v: (-tally[v], v))[:NAMED_TOKENS]
        named: dict[int, str] = {}
        if top:
            for b, token in zip(
                bucket_of(murmur3_32(pa.array(top)), t.bits).tolist(), top, strict=True
            ):
                named.setdefault(b, token)  # the most frequent token of the bucket
        pairs = tuple(sorted(named.items()))
        out.append(dataclasses.replace(t, named=pairs, rows=rows[j], truncated=truncated[j]))
    return tuple(out)
