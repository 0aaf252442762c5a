"""How a run is carried out (:class:`RunOptions`): checkpoints, warm start, prefetching, the
Dask cluster. None of it changes the trained model, so it may change between a run and its
resume; what decides the model is :class:`~streamgd.config.FitConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from .constraints import Flag, Integer, Interval, Size
from .errors import UsageError
from .settings import Setting, check_settings, setting, settings_of

__all__ = ["RunOptions", "RUN_SETTINGS"]


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the trained model (it may change between
    a run and its resume). Each field but ``handle_signals`` is a setting's one declaration."""

    checkpoint_dir: str | None = setting(
        None,
        None,
        "checkpoints",
        "Checkpoint directory [default with --output: OUTPUT.ckpt].",
        path="dir",
    )
    checkpoint_every: int | None = setting(
        None,
        Integer(1),
        "checkpoints",
        "Checkpoint every N steps (also at every epoch end and at the end).",
    )
    checkpoint_interval: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "checkpoints",
        "Checkpoint at most every this many seconds.",
    )
    keep: int = setting(3, Integer(1), "checkpoints", "Checkpoints to keep.")
    resume: bool = setting(
        False,
        Flag(),
        "checkpoints",
        "Continue from the newest valid checkpoint; start afresh if there is none.",
    )
    init: str | None = setting(
        None,
        None,
        "checkpoints",
        "Warm start from this model (weights, statistics, schedule step).",
        path="existing file",
    )
    continual: bool = setting(
        False,
        Flag(),
        "jobs",
        "A job run again and again over growing PATHS: train only on the files new since its "
        "last completed run, continuing from its checkpoint (which keeps the ledger of files "
        "trained on), for --epochs passes over the new rows; nothing new: exit 0. Needs -o or "
        "--checkpoint-dir.",
    )
    retrain_changed: bool = setting(
        False,
        Flag(),
        "jobs",
        "--continual: a file trained on that has changed since is trained on again (default: "
        "an error naming it).",
    )
    ignore_removed: bool = setting(
        False,
        Flag(),
        "jobs",
        "--continual: a file trained on that is gone is dropped from the ledger (default: an "
        "error naming it).",
    )
    refresh_stats: bool = setting(
        False,
        Flag(),
        "jobs",
        "--continual: take the standardisation statistics from this increment's files and "
        "re-express the weights for them exactly (default: fixed by the first run).",
    )
    replay: int | None = setting(
        None,
        Integer(1),
        "jobs",
        "--continual: keep a seeded reservoir of this many earlier rows in the checkpoint "
        "(numeric columns: ROWS x columns x 8 bytes) and mix them into each increment's "
        "shuffle.",
    )
    prefetch: int = setting(
        1, Integer(1), "performance", "Decoded row groups/blocks queued ahead of training."
    )
    memory_limit: str | None = setting(
        None,
        Size(),
        "performance",
        "Stay within this much memory (peak RSS), e.g. 200MB or 1.5GiB: the shuffle buffer, "
        "the lanes and the row-group pieces (those not given) and the prefetch depth are "
        "sized for it from the files' layout and recorded in the model; a limit the files "
        "cannot fit in is refused, naming the minimum. Parquet files only.",
        metavar="SIZE",
    )
    cluster: str | None = setting(
        None,
        None,
        "distributed",
        "Train data-parallel on Dask: local[:N] (N worker processes here), tcp://HOST:PORT "
        "or file:SCHEDULER.json. Workers must see the input paths.",
    )
    handle_signals: bool = False  # the command line's: SIGTERM/SIGINT checkpoint and stop

    def __post_init__(self) -> None:
        check_settings(self, RUN_SETTINGS)
        if self.resume and not self.checkpoint_dir:
            raise UsageError("--resume needs --checkpoint-dir (or --output, which implies one)")
        if self.continual and not self.checkpoint_dir:
            raise UsageError(
                "--continual keeps its ledger in a checkpoint: give --output (or --checkpoint-dir)"
            )
        if self.memory_limit and self.cluster:
            raise UsageError("--memory-limit bounds this process; leave out --cluster")
        if self.continual and self.cluster:
            raise UsageError("--continual trains in this process; leave out --cluster")
        continual_only = ("retrain_changed", "ignore_removed", "refresh_stats", "replay")
        for name in continual_only:
            if getattr(self, name) and not self.continual:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} applies to --continual runs only; add --continual")


RUN_SETTINGS: dict[str, Setting] = settings_of(RunOptions)
