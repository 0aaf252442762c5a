"""Data-parallel training on Dask: synchronous periodic model averaging (local SGD).

The row groups are dealt round-robin into ``shards`` fixed shards. Each round, every shard
that has not finished the epoch starts from the global weights and optimiser state, trains on
its next ``sync_every`` mini-batches, and returns its weights, state and row count; the driver
takes the row-weighted average (Zinkevich et al. 2010, McDonald et al. 2010, Stich 2018).
``sync_every=1`` is plain synchronous data-parallel SGD. How a round's inputs reach the
workers and its results come back, and the straggler-tolerant rounds of ``quorum`` below 1,
are :mod:`.rounds`' job.

A round task is a pure function of (its shard's row groups, its cursor, the weights, the
settings, the seed, the round): a task that Dask retries after a worker dies returns exactly
the same result, so a lost worker never changes the model. Each shard's row-group order is a
permutation seeded by (seed, epoch, shard), and rows are shuffled within each round's chunk:
no shuffle buffer is carried across rounds, so the driver's checkpoint stays small (weights,
optimiser state and one cursor per shard). Workers read a unit as the single-process trainer
does, one piece at a time (a row group, or a slice of at most ``SLICE_ROWS`` rows of a larger
one, or a CSV block), and keep the reader of the unit a shard is in, holding one piece, in a
per-process cache between rounds, keyed by the unit and every setting the rows depend on; a
retried task on another worker reads the unit again from its start up to the cursor.

Dask is imported only here, and only when ``--cluster`` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import folds, holdout
from ..config import FitConfig
from ..cursor import Cursor
from ..decode import Decoder
from ..errors import UsageError
from ..features import FeatureSpec, count_vector
from ..features.outliers import OutlierNotes
from ..solvers import SOLVERS, get_solver
from ..sources import Dataset, HandleCache, open_dataset
from .cluster import connected
from .loop import StepReport
from .rounds import RoundProtocol
from .state import TrainState

__all__ = ["shard_units", "round_task", "RunInputs", "DistributedTrainer"]

_ROUND_STREAM = 0x524F554E  # "ROUN": rows shuffled within a round's chunk
_ORDER_STREAM = 0x5348524400  # "SHRD": a shard's row-group order per epoch


def shard_units(n_units: int, shards: int) -> list[list[int]]:
    """Row groups dealt round-robin: disjoint, and as even as the row groups allow.

    >>> shard_units(5, 2)
    [[0, 2, 4], [1, 3]]
    """
    return [list(range(s, n_units, shards)) for s in range(shards)]


# -- the round task (runs on a worker) --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunInputs:
    """The driver's fingerprint of the input (:meth:`Dataset.fingerprint`), sent once per run
    to the workers; equal (and hashed) by its digest alone, so it keys the workers' cache of
    opened datasets by input version, not by paths."""

    digest: str
    fingerprint: dict = dataclasses.field(compare=False, hash=False)

    @classmethod
    def of(cls, dataset: Dataset) -> RunInputs:
        return cls(dataset.digest(), dataset.fingerprint())


@functools.lru_cache(maxsize=4)
def _open(paths: tuple[str, ...], fmt: str, csv, inputs: RunInputs) -> Dataset:
    """The input as this worker process opens it, once per input version: a file replaced
    between the driver's opening and the worker's is refused here (as one replaced while it
    is read is refused by the reads), and a long-lived worker never keeps reading an old
    version's layout after an upstream replace."""
    dataset = open_dataset(list(paths), fmt, csv=csv)
    dataset.check_fingerprint(inputs.fingerprint)
    return dataset


class _UnitStream:
    """The prepared rows of one unit, read forward piece by piece (a Parquet row group, or
    one of its slices of at most ``SLICE_ROWS`` rows, or a CSV block), so that a worker holds
    one piece of a unit, never the whole unit, as the single-process reader does.

    Positions are in prepared rows (after dropped rows and the holdout), as the shard's cursor
    counts them. ``rows`` are those from ``start`` on; ``counts`` the unit's counts up to
    and including them; ``exhausted`` whether no piece follows.
    """

    def __init__(self, pieces: Iterator[tuple[np.ndarray, np.ndarray]], n_features: int):
        self._pieces = pieces
        self.start = 0
        self.rows: np.ndarray | None = None
        self.counts = count_vector(n_features)
        self.exhausted = False

    @property
    def end(self) -> int:
        return self.start + (0 if self.rows is None else len(self.rows))

    def seek(self, offset: int) -> None:
        """Read on until the current piece holds row ``offset``, or the unit ends."""
        while self.end <= offset and not self.exhausted:
            try:
                rows, counts = next(self._pieces)
            except StopIteration:
                self.exhausted = True
                break
            self.start, self.rows = self.end, rows
            self.counts = self.counts + counts

    def take(self, offset: int, n: int) -> np.ndarray:
        """Up to ``n`` rows from ``offset`` (fewer at the end of a piece; none at the end)."""
        self.seek(offset)
        if self.rows is None or offset >= self.end:
            return self.rows[:0] if self.rows is not None else np.empty((0, 0), np.float32)
        return self.rows[offset - self.start : offset - self.start + n]

    def done(self, offset: int) -> bool:
        """Whether no row follows ``offset``: then ``counts`` are the whole unit's."""
        self.seek(offset)
        return self.exhausted


# The stream a shard is reading, kept in this worker process between rounds (one: bounded):
# the next round of that shard continues where the last stopped. A retried task elsewhere, or
# a round that starts before the cached position, reads the unit again from its start.
_UNIT_CACHE: dict[tuple, _UnitStream] = {}


def _unit_pieces(
    dataset: Dataset, unit_index: int, spec: FeatureSpec, loss, select, notes, tag=None
):
    """Decoded, prepared and centred rows (float32) and counts of each piece of one unit
    (under --cv with each row's fold last: ``tag``, see streamgd.folds)."""
    unit = dataset.units[unit_index]
    path = dataset.files[unit.file].path
    decoder = Decoder.for_training(spec, loss=loss, select=select, notes=notes, tag=tag)
    for table, first_row in dataset.iter_unit(unit, decoder.reads, HandleCache(columnwise=True)):
        yield decoder.decode(table, path, first_row)  # a fresh float32 matrix per piece


def _unit_stream(
    dataset: Dataset,
    unit_index: int,
    offset: int,
    spec: FeatureSpec,
    loss,
    key: tuple,
    select,
    tag=None,
) -> _UnitStream:
    """The cached stream of this unit if it can still reach ``offset``, else a new one. It
    is taken out of the cache while a task uses it (two threads never share one)."""
    stream = _UNIT_CACHE.pop(key, None)
    if stream is None or offset < stream.start:
        notes = OutlierNotes()
        pieces = _unit_pieces(dataset, unit_index, spec, loss, select, notes, tag)
        stream = _UnitStream(pieces, len(spec.names))
        stream.notes = notes  # the outliers its decoder meets (see features.outliers.guard)
    return stream


def _keep(key: tuple, stream: _UnitStream) -> None:
    _UNIT_CACHE.clear()  # one unit per process is enough: the shard reads it round by round
    _UNIT_CACHE[key] = stream


def _settings_key(spec: FeatureSpec, config: dict[str, Any]) -> str:
    """What the prepared rows depend on besides the unit: every field of the feature spec and
    the settings (a long-lived worker may serve runs with other settings in turn)."""
    digest = hashlib.sha256()
    _digest(digest, config)
    for f in dataclasses.fields(spec):
        _digest(digest, (f.name, getattr(spec, f.name)))
    return digest.hexdigest()


def _digest(digest, value: Any) -> None:
    """Feed ``value`` (arrays, containers, scalars) into ``digest``, arrays by their bytes."""
    if isinstance(value, np.ndarray):
        digest.update(f"array{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes() if value.dtype != object else b"")
        if value.dtype == object:
            _digest(digest, value.tolist())
    elif isinstance(value, dict):
        digest.update(b"dict")
        for k in sorted(value, key=repr):
            _digest(digest, (k, value[k]))
    elif isinstance(value, list | tuple):
        digest.update(f"seq{len(value)}".encode())
        for item in value:
            _digest(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def round_task(
    shard: int, cursor: Cursor, *, static: dict[str, Any], shared: tuple
) -> dict[str, Any]:
    """Train shard ``shard`` for up to ``sync_every`` batches from ``cursor``; pure.

    ``static`` holds what stays for the epoch (sent once: paths, format, every shard's units,
    feature spec, settings, and ``inputs``, the driver's fingerprint of the files, which the
    worker's opening must match); ``shared`` what every shard of the round shares (weights,
    optimiser state, global step, round number). With ``static["models"]`` (a grid's
    settings, one per model), ``shared`` holds one weights, state and step per model, and the
    result one ``models`` entry per model (see :func:`_grid_round`)."""
    from ..step import make_step  # the very step the single-process trainer takes

    t0 = time.perf_counter()
    params, opt_state, start_step, round_index = shared
    paths, spec, config = static["paths"], static["spec"], static["config"]
    cfg, settings = _prepared(static["token"], spec, config)
    loss, optimizer, schedule = cfg.make_loss(), cfg.make_optimizer(), cfg.make_schedule()
    dataset = _open(tuple(paths), static["fmt"], cfg.csv_options(), static["inputs"])
    order = _shard_order(static["units"][shard], cfg, cursor.epoch, shard)
    # --holdout-rows: the worker draws the same rows (a pure function of files, K and seed;
    # Parquet row counts from metadata), once per process
    select = holdout.selector(cfg, keep=False, dataset=dataset)
    tag = folds.fold_tag(cfg)  # --cv: each row's fold travels with it
    chunk, counts, position, offset, outlier_notes = _take_rows(
        dataset,
        paths,
        order,
        cursor.position,
        cursor.offset,
        need=cfg.sync_every * cfg.batch_size,
        spec=spec,
        loss=loss,
        settings=settings,
        select=select,
        tag=tag,
    )
    if cfg.shuffle and len(chunk):
        rng = np.random.default_rng([cfg.seed, cursor.epoch, shard, round_index, _ROUND_STREAM])
        chunk = chunk[rng.permutation(len(chunk))]
    if "models" in static:  # a grid (streamgd.search.cluster): every model on these rows
        trained: dict[str, Any] = {
            "models": _grid_round(static, spec, chunk, params, opt_state, start_step, tag),
            "rows": len(chunk),
        }
    else:
        step = make_step(cfg, spec, loss, optimizer)
        trained = _train_chunk(
            step,
            chunk,
            params,
            opt_state,
            schedule,
            batch_size=cfg.batch_size,
            start_step=start_step,
            fold=cfg.cv_fold if tag is not None else False,
        )
    return {
        "shard": shard,
        **trained,
        "counts": counts,
        "outlier_notes": outlier_notes,  # (column, warning): the driver warns once per column
        "cursor": Cursor(cursor.epoch, position, offset),
        "compute_s": time.perf_counter() - t0,
        "worker_pid": os.getpid(),
    }


# The settings parsed and the rows' settings key of the epoch's static inputs this process
# saw last (keyed by the driver's per-epoch token): not parsed and hashed again every round.
_PREPARED: dict[str, tuple[FitConfig, str]] = {}


def _prepared(token: str, spec: FeatureSpec, config: dict[str, Any]) -> tuple[FitConfig, str]:
    found = _PREPARED.get(token)
    if found is None:
        found = (FitConfig.from_dict(config), _settings_key(spec, config))
        _PREPARED.clear()
        _PREPARED[token] = found
    return found


# The FitConfig of each model of a grid's epoch this process saw last (as _PREPARED).
_GRID_CONFIGS: dict[str, list[FitConfig]] = {}


def _grid_round(static, spec, chunk, params, opt_states, start_steps, tag) -> list:
    """A grid's round on one shard: each model (``static["models"]``, its settings) takes
    the steps its run alone would take on ``chunk`` (the same step function, batches and
    schedule), from its own weights, optimiser state and step; None for a model the driver
    no longer trains (``params`` None)."""
    from ..step import make_step

    token = static["token"]
    configs = _GRID_CONFIGS.get(token)
    if configs is None:
        configs = [FitConfig.from_dict(c) for c in static["models"]]
        _GRID_CONFIGS.clear()
        _GRID_CONFIGS[token] = configs
    out: list[dict[str, Any] | None] = []
    for cfg, weights, state, start in zip(configs, params, opt_states, start_steps, strict=True):
        if weights is None:
            out.append(None)
            continue
        step = make_step(cfg, spec, cfg.make_loss(), cfg.make_optimizer())
        trained = _train_chunk(
            step,
            chunk,
            weights,
            state,
            cfg.make_schedule(),
            batch_size=cfg.batch_size,
            start_step=start,
            fold=cfg.cv_fold if tag is not None else False,
        )
        out.append(trained)
    return out


def _take_rows(
    dataset: Dataset,
    paths: tuple[str, ...],
    order: list[int],
    position: int,
    offset: int,
    *,
    need: int,
    spec: FeatureSpec,
    loss,
    settings,
    select,
    tag=None,
) -> tuple[np.ndarray, np.ndarray, int, int, list]:
    """Up to ``need`` prepared rows from the units in ``order``, starting at ``position`` and
    ``offset``: the rows, the counts of the units finished, and where the next round starts.
    A unit left part-way keeps its stream here for the next round. Last, the outliers met."""
    pieces, counts, notes = [], count_vector(len(spec.names)), []
    while need > 0 and position < len(order):
        key = (paths, order[position], settings)
        stream = _unit_stream(dataset, order[position], offset, spec, loss, key, select, tag)
        while need > 0:
            piece = stream.take(offset, need)
            if not len(piece):
                break
            pieces.append(piece)
            need -= len(piece)
            offset += len(piece)
        notes.extend(stream.notes.drain_items())  # (column, warning) of the outliers met
        if stream.done(offset):  # the unit is done: count it, move on
            counts += stream.counts
            position, offset = position + 1, 0
        else:
            _keep(key, stream)
    width = spec.width + (tag is not None)  # and each row's --cv fold
    chunk = np.concatenate(pieces) if pieces else np.empty((0, width), np.float32)
    return chunk, counts, position, offset, notes


def _train_chunk(
    step,
    chunk: np.ndarray,
    params,
    opt_state,
    schedule,
    *,
    batch_size: int,
    start_step: int,
    fold: int | None | bool = False,
) -> dict[str, Any]:
    """The round's batches in order: the new parameters and state, the summed loss, the
    steps and the rows trained on. ``fold``: under --cv (the chunk's last column is each
    row's fold), the model's fold, whose rows leave each batch (None: the model on all rows;
    see streamgd.folds); False without --cv."""
    loss_sum, steps, rows = 0.0, 0, 0
    for start in range(0, len(chunk), batch_size):
        raw = chunk[start : start + batch_size]
        if fold is not False:
            raw = folds.fold_rows(raw, fold)
            if not len(raw):
                continue
        params, opt_state, batch_loss, *_ = step(
            params, opt_state, raw, schedule(start_step + steps)
        )
        loss_sum += batch_loss
        steps += 1
        rows += len(raw)
    return {
        "params": params,
        "opt_state": opt_state,
        "loss_sum": loss_sum,
        "steps": steps,
        "rows": rows,
    }


def _shard_order(units: Sequence[int], cfg: FitConfig, epoch: int, shard: int) -> list[int]:
    if not cfg.shuffle:
        return list(units)
    rng = np.random.default_rng([cfg.seed, epoch, shard, _ORDER_STREAM])
    return [units[i] for i in rng.permutation(len(units))]


# -- the driver ---------------------------------------------------------------------------------
def check_supported(config: FitConfig) -> None:
    if not get_solver(config.solver).distributed:
        able = ", ".join(name for name, s in SOLVERS.items() if s.distributed)
        raise UsageError(
            f"--cluster trains with --solver {able} (the {config.solver} solver runs locally)"
        )
    if config.record_path:
        raise UsageError("--record-path is not available with --cluster")


class DistributedTrainer:
    """Runs rounds on a Dask cluster: the step source of a
    :class:`~streamgd.training.loop.Trainer`, whose epoch skeleton (validation, checkpoints,
    stopping) is the one a single process runs."""

    def __init__(self, base, cluster: str) -> None:
        self.base = base  # a streamgd.training.loop.Trainer: config, callbacks, checkpoints
        self.cluster = cluster
        self.client = None

    def run(self, state: TrainState) -> TrainState:
        check_supported(self.base.config)
        return self.base.run(state, source=self)

    @contextlib.contextmanager
    def session(self, state: TrainState) -> Iterator[None]:
        """Connected to the cluster, whose workers see the input files."""
        dataset, cfg = self.base.dataset, self.base.config
        self.shards = shard_units(len(dataset.units), cfg.shards or 2)
        self.paths = tuple(f.path for f in dataset.files)
        if state.dask.shards is None:
            state.dask.shards = [Cursor(state.epoch) for _ in self.shards]
        # in every task key (see RoundProtocol)
        self.run_key = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with connected(self.cluster, self.paths, cfg.format) as client:
            self.client = client
            try:
                yield
            finally:
                self.client = None

    def sync(self, state: TrainState) -> None:
        """Nothing to write back: each round's result goes into the state as it comes."""

    def epoch(self, state: TrainState) -> Iterator[StepReport]:
        """The epoch's segments of rounds, each shard from the global weights, averaged after
        every round: :mod:`.rounds` (``--round-protocol tasks``) or :mod:`.peer` runs them."""
        cfg, rounds = self.base.config, state.dask
        protocol = make_protocol(cfg, self.client, self.run_key)
        token = f"{state.epoch}-{self.run_key}"
        static = protocol.put(
            f"static-{state.epoch}",
            {
                "token": token,
                "paths": self.paths,
                "fmt": cfg.format,
                "units": self.shards,
                "spec": state.spec,
                "config": cfg.to_dict(),
                "inputs": RunInputs.of(self.base.dataset),
            },
        )
        while unfinished := [s for s, c in enumerate(rounds.shards) if not self._done(s, c)]:
            shared = (state.params, state.opt_state, state.step, rounds.round)
            outcome = protocol.segment(
                round_task,
                shard_finished,
                rounds.round,
                list(rounds.shards),
                unfinished,
                static=static,
                shared=shared,
            )
            steps = 0
            for records in outcome.rounds:
                for r in records:
                    rounds.shards[r["shard"]] = r["cursor"]
                    state.totals.counts = state.totals.counts + r["counts"]
                    self.base.outlier_notes.merge(r.get("outlier_notes", ()))
                steps += max((r["steps"] for r in records if r["rows"]), default=0)
                rounds.round += 1
            results = [r for records in outcome.rounds for r in records if r["rows"]]
            if not results:
                yield StepReport(0.0, state.params, 0, steps=0)
                continue
            state.params, state.opt_state = outcome.params, outcome.opt_state
            timing = _timing(rounds.round, outcome, outcome.wall_s)
            yield StepReport(
                sum(r["loss_sum"] for r in results),
                state.params,
                sum(r["rows"] for r in results),
                steps=steps,
                timing=timing,
            )
        rounds.shards = [Cursor(state.epoch + 1) for _ in self.shards]

    def _done(self, shard: int, cursor: Cursor) -> bool:
        """Whether the shard has read all its units this epoch."""
        return cursor.position >= len(self.shards[shard])


def shard_finished(static: dict[str, Any], shard: int, cursor: Cursor) -> bool:
    """Whether the shard has read all its units this epoch (on a worker: the peer protocol)."""
    return cursor.position >= len(static["units"][shard])


def make_protocol(cfg: FitConfig, client, run_key: str):
    """The round protocol of ``--round-protocol``: the trainer calls either the same way."""
    if cfg.round_protocol == "peer":
        from .peer import PeerProtocol

        return PeerProtocol(client, run_key)
    return RoundProtocol(client, run_key, quorum=cfg.quorum)


def _timing(round_number: int, outcome, wall: float) -> dict[str, Any]:
    """A segment's timing: its rounds, wall time, the shards' compute (slowest, mean: summed)."""
    ran = [[r["compute_s"] for r in records if r["rows"]] for records in outcome.rounds]
    ran = [c for c in ran if c]
    slowest = sum(max(c) for c in ran)
    return {
        "round": round_number,
        "rounds": len(outcome.rounds),
        "shards": max(len(c) for c in ran),
        "rows": sum(r["rows"] for records in outcome.rounds for r in records),
        "wall_s": wall,
        "compute_max_s": slowest,
        "compute_mean_s": float(sum(np.mean(c) for c in ran)),
        "overhead_s": max(wall - slowest, 0.0),
        "late": sum(outcome.late),
        "attempts": outcome.attempts,
    }
