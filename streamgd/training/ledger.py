"""The continual mode's books: which files a model has trained on, and what is new.

The ledger is a list of entries, one per file trained on: its ``path``, its stamp as in the
input fingerprint (``size``, ``mtime_ns``, content ``digest``: see
:mod:`streamgd.sources.fingerprint`), its ``rows`` (None for a CSV file, whose rows are known
only once read) and the ``increment`` (0 for the first run) that trained on it. A run compares
the files its paths resolve to now with the ledger (:func:`compare`) and trains only on the new
ones, in an order that depends on the seed and the increment only (:func:`training_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..sources import Dataset
from ..sources.fingerprint import differences
from ..sources.partitions import Partitions

__all__ = ["Increment", "entries", "compare", "training_order", "subset", "updated"]

# A fixed word in the seed sequence of the files' order, so that it draws from a stream of its
# own (the shuffle buffer's draws start from the seed too)
_ORDER_STREAM = 0x1ED6E7


@dataclass(frozen=True)
class Increment:
    """What a run of a continual job has to do: the indices (in the dataset) of the files new
    since the ledger or changed and accepted, and the ledger paths gone and accepted."""

    new: tuple[int, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def entries(dataset: Dataset, increment: int) -> list[dict[str, Any]]:
    """Ledger entries of every file of ``dataset``, trained on by ``increment``."""
    out = []
    for f in dataset.files:
        stamp = f.stamp.to_dict() if f.stamp is not None else {}
        out.append(
            {
                "path": f.path,
                "size": stamp.get("size", f.size),
                "mtime_ns": stamp.get("mtime_ns"),
                "digest": stamp.get("digest"),
                "rows": f.num_rows,
                "increment": increment,
            }
        )
    return out


def compare(
    ledger: Sequence[dict[str, Any]],
    dataset: Dataset,
    *,
    retrain_changed: bool,
    ignore_removed: bool,
) -> Increment:
    """The files of ``dataset`` not in ``ledger`` (new), and those in it whose stamp differs
    (changed): a DataError naming the first changed file unless ``retrain_changed`` (then they
    count as new), and the first ledger file ``dataset`` lacks unless ``ignore_removed``."""
    known = {e["path"]: e for e in ledger}
    now = entries(dataset, -1)
    new, changed = [], []
    for i, entry in enumerate(now):
        old = known.get(entry["path"])
        if old is None:
            new.append(i)
            continue
        what = differences(old, entry)
        if not what:
            continue
        if not retrain_changed:
            raise DataError(
                f"the file changed since increment {old['increment']} trained on it ({what}); "
                "--retrain-changed trains on it again (what the model learned from its old "
                "content stays), or restore it",
                path=entry["path"],
            )
        new.append(i)
        changed.append(entry["path"])
    present = {e["path"] for e in now}
    removed = [e["path"] for e in ledger if e["path"] not in present]
    if removed and not ignore_removed:
        raise DataError(
            f"the file was trained on (increment {known[removed[0]]['increment']}) but is no "
            "longer among the input files; --ignore-removed drops it from the ledger (what the "
            "model learned from it stays), or restore it",
            path=removed[0],
        )
    return Increment(tuple(new), tuple(changed), tuple(removed))


def training_order(paths: Sequence[str], seed: int, increment: int) -> list[int]:
    """Indices into ``paths`` in the order an increment trains them: a permutation of their
    sorted order drawn from (``seed``, ``increment``), so the same files give the same order
    however they were listed.

    >>> one, other = ["b", "a", "c"], ["c", "b", "a"]
    >>> in_order = [one[i] for i in training_order(one, 0, 1)]
    >>> in_order == [other[i] for i in training_order(other, 0, 1)]
    True
    """
    by_path = sorted(range(len(paths)), key=lambda i: paths[i])
    rng = np.random.default_rng([_ORDER_STREAM, seed, increment])
    return [by_path[int(k)] for k in rng.permutation(len(by_path))]


def subset(dataset: Dataset, indices: Sequence[int]) -> Dataset:
    """The dataset of ``dataset``'s files at ``indices``, in that order, with its schema, CSV
    options and partition values (their stamps kept: every read is checked against them)."""
    files = tuple(dataset.files[i] for i in indices)
    parts = dataset.partitions
    values = tuple(parts.values[i] for i in indices) if parts.values else ()
    return Dataset.of(
        files,
        dataset.schema,
        csv_schema=dataset.csv_schema,
        csv=dataset.csv,
        partitions=Partitions(parts.schema, values),
    )


def updated(
    ledger: Sequence[dict[str, Any]], trained: Sequence[dict[str, Any]], removed: Sequence[str]
) -> list[dict[str, Any]]:
    """``ledger`` with the entries ``trained`` (replacing those of the same path: a changed
    file retrained) and without the paths ``removed``, sorted by path."""
    gone = set(removed) | {e["path"] for e in trained}
    kept = [e for e in ledger if e["path"] not in gone]
    return sorted([*kept, *trained], key=lambda e: e["path"])
