"""Rounds without the scheduler on their path: one Dask actor per shard, called directly.

The same interface as :class:`~streamgd.training.rounds.RoundProtocol` (``put``, ``run``),
so the trainer and the emulator can run either. Each shard gets an actor on a worker when
the epoch starts (one task per shard per epoch through the scheduler); each round the driver
calls every actor directly (Dask sends actor calls from the client to the worker, not through
the scheduler), and the actor runs the very round task in a thread of its worker. The epoch's
static inputs go to each actor once.

Failure behaviour: Dask does not make a lost actor again. A call whose worker is gone raises;
the driver then places a new actor for that shard on a worker still alive and calls it with
the same arguments. The round task is a pure function of its arguments (the shard's cursor is
the driver's), so the result is the one the lost worker would have returned: a killed worker
leaves the weights bit-identical, as with tasks. A worker that joins gets actors at the next
epoch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamgd.training.rounds import RoundOutcome

__all__ = ["ShardActor", "ActorProtocol"]


class ShardActor:
    """Lives on a worker for an epoch and runs a shard's round tasks there."""

    def __init__(self) -> None:
        self.static: Any = None

    def set_static(self, static: Any) -> None:
        self.static = static

    async def run(self, task: Callable[..., Any], shard: int, own: Any, shared: Any) -> Any:
        # in a thread, off the worker's event loop (and off its one actor thread): the
        # actors of one worker process run side by side as its tasks would
        return await asyncio.to_thread(task, shard, own, static=self.static, shared=shared)


class ActorProtocol:
    """Runs rounds of ``task(shard, own, *, static, shared)`` on per-shard actors."""

    def __init__(self, client, run_key: str, *, retries: int = 5) -> None:
        self.client, self.run_key, self.retries = client, run_key, retries
        self.actors: dict[int, Any] = {}
        self.static: Any = None
        self.placed = 0

    def put(self, name: str, value: Any) -> Any:
        """The epoch's static inputs: kept here, sent to each actor once."""
        self.static = value
        self.actors.clear()  # a new epoch: new actors (and a worker that joined gets some)
        return value

    def _actor(self, shard: int, avoid: set[str]):
        if shard not in self.actors:
            workers = sorted(set(self.client.scheduler_info()["workers"]) - avoid)
            where = [workers[self.placed % len(workers)]] if workers else None
            self.placed += 1
            future = self.client.submit(
                ShardActor,
                actor=True,
                workers=where,
                allow_other_workers=True,
                key=f"streamgd-actor-{shard}-{self.placed}-{self.run_key}",
            )
            actor = future.result()
            actor.set_static(self.static).result()
            self.actors[shard] = actor
        return self.actors[shard]

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
        t0 = time.perf_counter()
        own = dict(zip(shards, own, strict=True))
        calls = {s: self._call(task, s, own[s], shared) for s in shards}
        results = []
        for s in shards:
            for attempt in range(self.retries + 1):
                try:
                    results.append(calls[s].result())
                    break
                except (OSError, RuntimeError):  # the actor's worker is gone
                    if attempt == self.retries:
                        raise
                    calls[s] = self._call(task, s, own[s], shared, lost=True)
        return RoundOutcome(results, [], time.perf_counter() - t0)

    def _call(self, task, shard: int, own: Any, shared: Any, *, lost: bool = False):
        """The round's call on the shard's actor (a new one, elsewhere, if it was lost)."""
        avoid: set[str] = set()
        for _ in range(self.retries + 1):
            if lost and shard in self.actors:
                avoid.add(self.actors.pop(shard)._address)
            try:
                return self._actor(shard, avoid).run(task, shard, own, shared)
            except (OSError, RuntimeError):
                lost = True
        raise OSError(f"no worker could hold the actor of shard {shard}")
