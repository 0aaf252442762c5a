"""The Dask round protocol: how a round's inputs reach the workers and its results come back.

One job: given a task function, the shards of a round, what each shard needs and what all of
them share, run the round on the cluster and return the finished shards' results in shard
order. :class:`~streamgd.training.distributed.DistributedTrainer` trains with it, and the
scaling emulator (``tools/dask_emulator.py``) runs it with simulated compute, so that what the
emulator measures is the code the trainer runs.

What travels, and how (issue 19, the cheap fixes):

- inputs that do not change within an epoch (paths, settings, feature spec, row-group lists)
  go once per epoch, as the result of a ``hold`` task (:meth:`RoundProtocol.put`), not with
  every task of every round. A task result, not a scattered value: a broadcast scatter right
  after a worker was killed could wait for it forever (seen in the tests), and data that only
  a scatter put on a lost worker cannot be made again, while a task's result can.
- the round's shared inputs (weights, optimiser state, step) go inside the tasks while they
  are small, and as one ``hold`` task that the workers fetch from each other once they reach
  ``HOLD_BYTES``: then they pass the scheduler once per round, not once per task.
- one ``client.map`` per round (not one ``submit`` per shard), and one gather; it fetches
  the results from the workers directly (``direct=True``), not through the scheduler, when
  they are as large as ``HOLD_BYTES`` (small results come faster through the scheduler: a
  direct gather first asks the scheduler where they are, then each worker).

``quorum`` below 1 ends a round when that share of its shards is done (straggler-tolerant
mode); the late shards' tasks are cancelled and their cursors stay where they were, so they
take the same rows again next round, from the new weights; a shard left out once is waited
for in the next round, so every shard moves on at least every other round. The result then
depends on which shards were late: reproducible given the same schedule of events, not
across runs. ``quorum=1`` (the default) waits for every shard: bit-identical results.

Dask is imported only here and in :mod:`.distributed` and :mod:`.cluster`, and only when
``--cluster`` is given (the client is passed in).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "HOLD_BYTES",
    "RoundOutcome",
    "RoundProtocol",
    "SegmentOutcome",
    "average",
    "hold",
    "nbytes",
]

HOLD_BYTES = 64 * 1024  # shared inputs from this size travel as one held task result


def hold(value: Any) -> Any:
    """A task that returns its argument: data the scheduler can make again (see the module)."""
    return value


def nbytes(value: Any) -> int:
    """The bytes of the arrays in ``value`` (arrays, dicts, lists, tuples), roughly."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value)
    return 8


@dataclasses.dataclass
class RoundOutcome:
    """A round's finished results (in shard order), the shards left out, and its wall time."""

    results: list[Any]
    late: list[int]
    wall_s: float


@dataclasses.dataclass
class SegmentOutcome:
    """What the trainer gets from a protocol (the seam of ``--round-protocol``): the records
    of each round of a segment (per round, the shards that ran, in shard order, without their
    weights), the averaged end state (None when no shard took a row), the shards left out of
    each round, the wall time, and how many attempts the segment took."""

    rounds: list[list[dict[str, Any]]]
    params: Any
    opt_state: Any
    late: list[int]
    wall_s: float
    attempts: int = 1


class RoundProtocol:
    """Runs rounds of ``task(shard, own, *, static, shared)`` on a Dask ``client``.

    ``run_key`` goes into every key: two runs of one process (a resumed run, or another fit)
    must never meet a key of the other's that the scheduler has not forgotten yet.
    """

    def __init__(
        self,
        client,
        run_key: str,
        *,
        quorum: float = 1.0,
        retries: int = 5,
        hold_bytes: int | None = None,
        direct: bool | None = None,
    ) -> None:
        self.client, self.run_key = client, run_key
        self.quorum, self.retries = quorum, retries
        self.hold_bytes = HOLD_BYTES if hold_bytes is None else hold_bytes
        self.direct = direct  # None: a direct gather when the state reaches hold_bytes
        self.required: set[int] = set()  # shards left out of the last round: waited for now

    def put(self, name: str, value: Any):
        """``value`` on the cluster as a task result (recoverable), to pass to every task."""
        return self.client.submit(hold, value, key=f"streamgd-{name}-{self.run_key}", pure=False)

    def run(
        self,
        task: Callable[..., Any],
        round_index: int,
        shards: Sequence[int],
        own: Sequence[Any],
        *,
        static: Any,
        shared: Any,
    ) -> RoundOutcome:
        """One round: ``task`` for each shard of ``shards`` (with its item of ``own``)."""
        t0 = time.perf_counter()
        large = nbytes(shared) >= self.hold_bytes
        if large:
            shared = self.put(f"shared-{round_index}", shared)
        keys = [f"streamgd-round-{round_index}-shard-{s}-{self.run_key}" for s in shards]
        futures = self.client.map(
            task,
            list(shards),
            list(own),
            static=static,
            shared=shared,
            key=keys,
            pure=False,
            retries=self.retries,
        )
        late: list[int] = []
        if self.quorum < 1.0 and len(shards) > 1:
            futures, late = self._quorum(futures, list(shards))
        direct = large if self.direct is None else self.direct
        results = self.client.gather(futures, direct=direct)
        return RoundOutcome(list(results), late, time.perf_counter() - t0)

    def segment(
        self,
        task: Callable[..., Any],
        finished: Callable[[Any, int, Any], bool],  # noqa: ARG002 (the trainer says: active)
        round_index: int,
        own: Sequence[Any],
        active: Sequence[int],
        *,
        static: Any,
        shared: Any,
    ) -> SegmentOutcome:
        """A segment of one round (``--round-protocol tasks``): the shards of ``active``, then
        the driver's average of those that took rows."""
        outcome = self.run(
            task, round_index, active, [own[s] for s in active], static=static, shared=shared
        )
        taken = [r for r in outcome.results if r["rows"]]
        params, opt_state = average(taken) if taken else (None, None)
        heavy = ("params", "opt_state")
        records = [{k: v for k, v in r.items() if k not in heavy} for r in outcome.results]
        return SegmentOutcome([records], params, opt_state, [len(outcome.late)], outcome.wall_s)

    def _quorum(self, futures: list, shards: list[int]) -> tuple[list, list[int]]:
        """Wait until ``quorum`` of the shards, and every shard left out last round, are
        done; cancel the others. The finished futures in shard order, and the late shards."""
        from distributed import as_completed

        need = max(1, math.ceil(self.quorum * len(shards)))
        must = self.required & set(shards)
        index = {f.key: s for f, s in zip(futures, shards, strict=True)}
        done: set[int] = set()
        for future in as_completed(futures):
            done.add(index[future.key])
            if len(done) >= need and must <= done:
                break
        late = [s for s in shards if s not in done]
        if late:
            self.client.cancel([f for f, s in zip(futures, shards, strict=True) if s not in done])
        self.required = set(late)
        return [f for f, s in zip(futures, shards, strict=True) if s in done], late


def average(results: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Row-weighted mean of the shards' weights and optimiser states (integer counters, like
    Adam's step count, take the largest)."""
    weights = np.array([r["rows"] for r in results], dtype=np.float64)
    weights /= weights.sum()
    params = sum(w * r["params"] for w, r in zip(weights, results, strict=True))
    state: dict[str, np.ndarray] = {}
    for key in results[0]["opt_state"]:
        values = [np.asarray(r["opt_state"][key]) for r in results]
        if np.issubdtype(values[0].dtype, np.integer):
            state[key] = np.max(values, axis=0)
        else:
            state[key] = sum(w * v for w, v in zip(weights, values, strict=True))
    return params, state
