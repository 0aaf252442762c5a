"""The peer round protocol (``--round-protocol peer``): segments of rounds without the driver.

One job: run a *segment* of up to ``rounds`` rounds as one long-lived task per shard, the
shards averaging among themselves after every round, so that the scheduler and the driver
are off the per-round path: the driver starts a segment (one task per shard, placed one per
worker in turn) and collects its end state; it is not involved in between.

How the shards average (issue 19, item 3): a binary reduction tree over the shard numbers,
over Dask's worker-to-worker RPC (a handler this module installs on every worker with
``client.run``; messages go from one worker's server to another's, never through the
scheduler). Shard ``s`` adds in the partial sum of shard ``s + 2**l`` at level ``l`` (its
own first: a fixed order of summation), sends its sum up to ``s - 2**l`` when ``s`` is odd at
that level, and shard 0 divides by the total rows and sends the average down the same tree:
2 (K - 1) messages per round, 2 log2 K hops of latency, and no node handles more than
log2 K + 1 of them. Each shard contributes its rows x weights (and optimiser state; integer
counters take the largest, as :func:`.rounds.average` does). The order of summation is fixed,
so a run is bit-identical to another with the same seed and schedule; it is not the driver's
order (weights r/R summed shard by shard), so it agrees with ``--round-protocol tasks`` to a
few units in the last place per round, not bit for bit.

Failure: a segment's tasks never retry alone (a retried shard would wait for messages of
rounds its peers are past). The driver holds the segment's start state; if a task fails or a
worker of the segment leaves, it aborts the segment on every worker (the waiting tasks
return) and runs it again from that start state, with a new key: the same rows, the same
rounds, bit-identical to an undisturbed run. A worker that joins mid-segment is used from the
next segment on (a segment's placement is fixed when it starts). Segments end at every
``SEGMENT_ROUNDS``-th round and at the epoch's end, whatever the run options: checkpoints
(``--checkpoint-every``, ``--checkpoint-interval``, a signal) are taken at segment ends, and a
resumed run is bit-identical to an uninterrupted one, reported losses included.

Every task of a segment runs at once: each secedes from its worker's thread pool, so that K
shards never wait for K threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .rounds import SegmentOutcome, hold

__all__ = ["PeerProtocol", "segment_task", "tree_allreduce", "SEGMENT_ROUNDS"]

SEGMENT_ROUNDS = 64  # rounds per segment at most (a redo after a failure repeats this many)
WAIT_S = 600.0  # a peer's message not come in this long: the segment fails (a safety net)
_OP = "streamgd_peer"

# -- the workers' mailbox (one per worker process) ------------------------------------------
_COND = threading.Condition()
_MAILBOX: dict[tuple, Any] = {}
_ABORTED: set[str] = set()


def _receive(
    segment: str = "", round: int = 0, phase: str = "", src: int = 0, dst: int = 0, payload=None
):
    """The RPC handler: a peer's message, kept until its task (shard ``dst``) takes it."""
    with _COND:
        if segment not in _ABORTED:
            _MAILBOX[(segment, round, phase, src, dst)] = payload
            _COND.notify_all()
    return "ok"


def install(dask_worker=None) -> str:
    """Run on every worker (``client.run``) before a segment: the handler of peer messages."""
    dask_worker.handlers[_OP] = _receive
    return dask_worker.address


def abort(segment: str) -> int:
    """Run on every worker when a segment fails: its waiting tasks give up, its mail goes."""
    with _COND:
        _ABORTED.add(segment)
        stale = [k for k in _MAILBOX if k[0] == segment]
        for k in stale:
            del _MAILBOX[k]
        _COND.notify_all()
    return len(stale)


class SegmentAborted(RuntimeError):
    """The driver gave up this segment (a peer failed): the task returns nothing."""


class _Link:
    """How one shard's task talks to its peers: ``peers[s]`` is the address of shard s."""

    def __init__(self, segment: str, shard: int, peers: Sequence[str]):
        from distributed import get_worker

        self.segment, self.shard, self.peers = segment, shard, list(peers)
        self.worker = get_worker()
        self.sent = 0

    def send(self, to: int, round_index: int, phase: str, payload: Any) -> None:
        addr = self.peers[to]
        self.sent += 1
        if addr == self.worker.address:  # a shard on this worker: no network
            _receive(self.segment, round_index, phase, self.shard, to, payload)
            return
        from distributed.protocol import to_serialize
        from distributed.utils import sync

        async def post():
            call = getattr(self.worker.rpc(addr), _OP)
            return await call(
                segment=self.segment,
                round=round_index,
                phase=phase,
                src=self.shard,
                dst=to,
                payload=to_serialize(payload),
            )

        sync(self.worker.loop, post)

    def recv(self, src: int, round_index: int, phase: str) -> Any:
        key = (self.segment, round_index, phase, src, self.shard)
        deadline = time.monotonic() + WAIT_S
        with _COND:
            while key not in _MAILBOX:
                if self.segment in _ABORTED:
                    raise SegmentAborted(self.segment)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"shard {src} sent nothing for {WAIT_S:.0f} s")
                _COND.wait(timeout=1.0)
            return _MAILBOX.pop(key)


# -- the reduction ---------------------------------------------------------------------------
def _combine(a: dict | None, b: dict | None) -> dict | None:
    """Two partial sums, ``a`` (the lower shards) first."""
    if a is None or b is None:
        return b if a is None else a
    out = {"rows": a["rows"] + b["rows"], "params": a["params"] + b["params"], "opt": {}}
    for k, v in a["opt"].items():
        w = b["opt"][k]
        out["opt"][k] = np.maximum(v, w) if np.issubdtype(v.dtype, np.integer) else v + w
    return out


def tree_allreduce(link: _Link, n: int, round_index: int, part: Any, combine=_combine) -> Any:
    """Every shard's ``part`` combined up a binary tree in shard order; the total (shard 0's
    ``finish``ed value) comes back down to every shard. ``part`` is (sum, counters)."""
    s, stride = link.shard, 1
    while stride < n:  # up: take in the right subtree at each level, or hand ours up
        if s % (2 * stride):
            link.send(s - stride, round_index, "up", part)
            break
        if s + stride < n:
            part = combine(part, link.recv(s + stride, round_index, "up"))
        stride *= 2
    if s:  # down: the total from the parent, then on to our subtrees, the largest first
        part = link.recv(s - (s & -s), round_index, "down")
    low = (s & -s) if s else 1 << max(n - 1, 0).bit_length()
    stride = low // 2
    while stride >= 1:
        if s + stride < n:
            link.send(s + stride, round_index, "down", part)
        stride //= 2
    return part


def _contribution(result: dict | None) -> dict | None:
    if result is None or not result["rows"]:
        return None
    rows = float(result["rows"])
    opt = {}
    for k, v in result["opt_state"].items():
        v = np.asarray(v)
        opt[k] = v if np.issubdtype(v.dtype, np.integer) else rows * v
    return {"rows": result["rows"], "params": rows * result["params"], "opt": opt}


def _finish(total: dict | None, params, opt_state) -> tuple[Any, dict]:
    """The average from the total (the start state when no shard took a row)."""
    if total is None:
        return params, opt_state
    rows = float(total["rows"])
    opt = {
        k: v if np.issubdtype(v.dtype, np.integer) else v / rows for k, v in total["opt"].items()
    }
    return total["params"] / rows, opt


# -- the segment task (runs on a worker, one per shard) ----------------------------------------
def segment_task(
    shard: int,
    own: Any,
    *,
    task: Callable[..., dict],
    finished: Callable[[Any, int, Any], bool],
    static: Any,
    shared: tuple,
    plan: dict,
) -> dict:
    """Up to ``plan["rounds"]`` rounds of ``task`` for ``shard``, averaging with the peers after
    each. ``task(shard, own, static=, shared=(params, opt_state, step, round))`` is the round
    task (its result's ``cursor`` is the shard's next ``own``); ``finished(static, shard, own)``
    whether the shard has no rows left this epoch. Returns the rounds' records (without the
    weights) and, from shard 0, the end state."""
    from distributed import secede

    secede()  # long-lived: K shards never wait for K threads
    link = _Link(plan["segment"], shard, plan["peers"])
    n = len(plan["peers"])
    params, opt_state, step, first = shared
    records: list[dict | None] = []
    t_wait = 0.0
    for round_index in range(first, first + plan["rounds"]):
        result = None
        if not finished(static, shard, own):
            result = task(shard, own, static=static, shared=(params, opt_state, step, round_index))
            own = result["cursor"]
        counters = (
            result["steps"] if result is not None and result["rows"] else 0,
            0 if finished(static, shard, own) else 1,
        )
        t0 = time.perf_counter()
        total, (steps, unfinished) = tree_allreduce(
            link, n, round_index, (_contribution(result), counters), combine=_combine_counted
        )
        t_wait += time.perf_counter() - t0
        params, opt_state = _finish(total, params, opt_state)
        step += steps
        records.append(
            None if result is None else {k: v for k, v in result.items() if k not in _HEAVY}
        )
        if not unfinished:
            break
    return {
        "shard": shard,
        "records": records,
        "cursor": own,
        "params": params if shard == 0 else None,
        "opt_state": opt_state if shard == 0 else None,
        "messages": link.sent,
        "reduce_s": t_wait,
    }


_HEAVY = ("params", "opt_state")


def _combine_counted(a: tuple, b: tuple) -> tuple:
    """Partial sums with their counters: the most steps any shard took, shards unfinished."""
    return _combine(a[0], b[0]), (max(a[1][0], b[1][0]), a[1][1] + b[1][1])


# -- the driver's side ---------------------------------------------------------------------------
class PeerProtocol:
    """Runs segments of rounds on a Dask ``client``; ``run_key`` as in :class:`.RoundProtocol`."""

    def __init__(self, client, run_key: str, *, rounds: int | None = None, retries: int = 5):
        self.client, self.run_key = client, run_key
        self.rounds, self.retries = rounds or SEGMENT_ROUNDS, retries
        self.poll_s = 0.5
        self.last: list[dict] = []  # the last segment's task results (messages, reduce time)

    def put(self, name: str, value: Any):
        """``value`` on the cluster as a task result (recoverable), to pass to every task."""
        return self.client.submit(hold, value, key=f"streamgd-{name}-{self.run_key}", pure=False)

    def segment(
        self,
        task: Callable[..., dict],
        finished: Callable[[Any, int, Any], bool],
        round_index: int,
        own: Sequence[Any],
        active: Sequence[int],  # noqa: ARG002 (every shard runs; finished ones wait)
        *,
        static: Any,
        shared: tuple,
    ) -> SegmentOutcome:
        """One segment from round ``round_index``: every shard (``own[s]`` its cursor)."""
        t0 = time.perf_counter()
        for attempt in range(self.retries + 1):
            results = self._attempt(task, finished, round_index, own, static, shared, attempt)
            if results is not None:
                self.last = results
                n_rounds = max(len(r["records"]) for r in results)
                rounds = [
                    [r["records"][i] for r in results if r["records"][i] is not None]
                    for i in range(n_rounds)
                ]
                head = results[0]
                params = head["params"] if any(r["rows"] for rs in rounds for r in rs) else None
                return SegmentOutcome(
                    rounds,
                    params,
                    head["opt_state"] if params is not None else None,
                    [0] * n_rounds,
                    time.perf_counter() - t0,
                    attempt + 1,
                )
        raise RuntimeError(f"a segment from round {round_index} failed {self.retries + 1} times")

    def _attempt(self, task, finished, round_index, own, static, shared, attempt):
        from distributed import wait

        client = self.client
        # a worker lost while the handler goes out is left out of this attempt (the scheduler
        # may not know yet that it is gone); with none left, wait for one and try again
        installed = client.run(install, on_error="return")
        workers = sorted(w for w, r in installed.items() if not isinstance(r, BaseException))
        if not workers:
            with contextlib.suppress(TimeoutError):
                client.wait_for_workers(1, timeout=60)
            return None
        roster = _roster(client)  # a worker restarted at the same address is another one
        peers = [workers[s % len(workers)] for s in range(len(own))]
        name = f"streamgd-segment-{round_index}-try-{attempt}-{self.run_key}"
        # segments end at multiples of ``rounds`` (and at the epoch's end): the same segments
        # in every run and resume, so even the losses are summed in the same order
        plan = {"segment": name, "peers": peers, "rounds": self.rounds - round_index % self.rounds}
        futures = [
            client.submit(
                segment_task,
                s,
                own[s],
                task=task,
                finished=finished,
                static=static,
                shared=shared,
                plan=plan,
                key=f"{name}-shard-{s}",
                workers=[peers[s]],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
            for s in range(len(own))
        ]
        while True:
            with contextlib.suppress(TimeoutError):
                wait(futures, timeout=self.poll_s)
            failed = any(f.status in ("error", "cancelled", "lost") for f in futures)
            if not failed and all(f.status == "finished" for f in futures):
                return client.gather(futures)
            now = _roster(client)
            if failed or any(now.get(p) != roster.get(p) for p in peers):
                client.run(abort, name, on_error="ignore")  # the waiting tasks give up
                client.cancel(futures, force=True)
                return None


def _roster(client) -> dict[str, tuple]:
    """Each worker's address -> (its id, its process): which process a segment's task is in."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {addr: (w.get("id"), w.get("pid")) for addr, w in workers.items()}
