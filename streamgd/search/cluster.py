"""A grid's epochs on a Dask cluster (``--cluster``): every round, each shard's task reads
its rows once and every model takes its own steps on them (:func:`~streamgd.training.
distributed.round_task` with the grid's settings); the driver then averages each model's
shard results separately, exactly as the run of that model alone averages its own.

So the data is read once per round for the whole grid, and each model ends bit-identical to
the same configuration trained alone on the same cluster settings (``--shards``,
``--sync-every``, seed; ``--quorum 1``). The epoch's end (validation of every model in one
pass, early stopping, history) is the grid engine's, as in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..cursor import Cursor
from ..errors import PreemptedError
from ..features import count_vector
from ..training.cluster import connected
from ..training.distributed import RunInputs, check_supported, round_task, shard_units
from ..training.rounds import RoundProtocol, average

__all__ = ["ClusterEpochs"]


class ClusterEpochs:
    """Runs a grid's epochs on the cluster ``cluster`` (an address, as ``--cluster``) with
    the data and settings of ``lead`` (the first model's trainer: every model shares them)."""

    def __init__(self, lead, cluster: str, configs) -> None:
        for config in configs:
            check_supported(config)
        self.lead, self.cluster = lead, cluster
        self.client = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Connected to the cluster for the whole run, whose workers see the input files."""
        dataset, cfg = self.lead.dataset, self.lead.config
        self.shards = shard_units(len(dataset.units), cfg.shards or 2)
        self.paths = tuple(f.path for f in dataset.files)
        self.run_key = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with connected(self.cluster, self.paths, cfg.format) as client:
            self.client = client
            try:
                yield
            finally:
                self.client = None

    def epoch(self, active: list, members: list, saver) -> None:
        """The rest of the epoch the ``active`` members are in, round by round; checkpoints
        of every member when ``saver`` says so (and on SIGTERM/SIGINT)."""
        first = active[0].state
        rounds = first.dask
        if rounds.shards is None:
            rounds.shards = [Cursor(first.epoch) for _ in self.shards]
        for m in active:
            if m.state.totals.start is None:
                m.state.totals.start = m.state.params.copy()
            if m.state.totals.counts is None:
                m.state.totals.counts = count_vector(len(first.spec.names))
        cfg = self.lead.config
        protocol = RoundProtocol(self.client, self.run_key, quorum=cfg.quorum)
        static = protocol.put(
            f"static-{first.epoch}",
            {
                "token": f"{first.epoch}-{self.run_key}",
                "paths": self.paths,
                "fmt": cfg.format,
                "units": self.shards,
                "spec": first.spec,
                "config": cfg.to_dict(),
                "inputs": RunInputs.of(self.lead.dataset),
                "models": [m.config.to_dict() for m in active],
            },
        )
        live = list(range(len(active)))
        while live and (unfinished := self._unfinished(rounds)):
            shared = _shared(active, live, rounds.round)
            outcome = protocol.run(
                round_task,
                rounds.round,
                unfinished,
                [rounds.shards[s] for s in unfinished],
                static=static,
                shared=shared,
            )
            for r in outcome.results:
                rounds.shards[r["shard"]] = r["cursor"]
                for i in live:
                    totals = active[i].state.totals
                    totals.counts = totals.counts + r["counts"]
                self.lead.outlier_notes.merge(r.get("outlier_notes", ()))
            results = [r for r in outcome.results if r["rows"]]
            rounds.round += 1
            if results:
                for i in live:
                    _apply(active[i], i, results)
            live = [i for i in live if not active[i].state.finished]
            for m in active[1:]:  # the shards' cursors are every model's
                m.state.dask = dataclasses.replace(rounds, shards=list(rounds.shards))
            if saver is not None:
                saver.batches += 1
                if saver.signum is not None:  # SIGTERM/SIGINT: a last checkpoint, then stop
                    saver.save(members)
                    raise PreemptedError(
                        f"stopped by {signal.Signals(saver.signum).name} after round "
                        f"{rounds.round} of the grid; a checkpoint was written: rerun with "
                        "--resume to continue"
                    )
                if saver.due():
                    saver.save(members)
        rounds.shards = [Cursor(first.epoch + 1) for _ in self.shards]
        for m in active[1:]:
            m.state.dask = dataclasses.replace(rounds, shards=list(rounds.shards))

    def _unfinished(self, rounds) -> list[int]:
        return [s for s, c in enumerate(rounds.shards) if c.position < len(self.shards[s])]


def _shared(active: list, live: list[int], round_index: int) -> tuple:
    """Each model's weights, optimiser state and step (None for a model no longer
    trained), and the round."""
    on = set(live)
    states = [m.state for m in active]
    return (
        [s.params if i in on else None for i, s in enumerate(states)],
        [s.opt_state if i in on else None for i, s in enumerate(states)],
        [s.step for s in states],
        round_index,
    )


def _apply(member, i: int, results: list[dict[str, Any]]) -> None:
    """Model ``i``'s average over the shards, as its run alone applies its round (see
    :meth:`streamgd.training.distributed.DistributedTrainer.epoch` and the trainer's
    divergence guard); a model whose loss or weights became NaN or infinite stops,
    ``diverged``, with its last finite weights."""
    own = [r["models"][i] for r in results if r["models"][i]["rows"]]  # its rows (--cv)
    if not own:
        return
    params, opt_state = average(own)
    loss_sum = sum(x["loss_sum"] for x in own)
    state = member.state
    if not (math.isfinite(loss_sum) and math.isfinite(np.add.reduce(params, axis=None))):
        state.finished, state.stop_reason = True, "diverged"
        member.extra["diverged_at_step"] = state.step + 1
        return
    state.params, state.opt_state = params, opt_state
    steps = max(x["steps"] for x in own)
    if steps:
        rows = sum(x["rows"] for x in own)
        state.step += steps
        state.rows_trained += rows
        state.totals.rows += rows
        state.totals.loss += loss_sum
