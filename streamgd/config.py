"""Settings of a training run: one frozen dataclass, validated once, from a declarative table
(:data:`SETTINGS`, one :class:`Setting` per field, constraints from :mod:`constraints`).

:class:`FitConfig` holds everything that decides the trained model (it is fingerprinted into
checkpoints); how a run is carried out (checkpoint cadence, progress, prefetch depth) lives in
:class:`RunOptions` and can change between a run and its resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

# Only light modules here (the names come from ``choices``), so that the settings' declarations
# and the command line built from them load without numpy and pyarrow.
from .choices import LOSSES, OPTIMIZERS, ROUND_PROTOCOLS, SOLVERS
from .config_checks import check_combinations
from .constraints import Integer, Interval, Names, Options
from .data_settings import DataSettings, csv_options_from
from .errors import UsageError
from .run_options import RUN_SETTINGS, RunOptions
from .schedules import SCHEDULES
from .settings import Setting, check_settings, setting, settings_of, unknown_setting

__all__ = [
    "FitConfig",
    "RunOptions",
    "DEFAULT_LR",
    "SETTINGS",
    "CONFIG_SETTINGS",
    "RUN_SETTINGS",
    "split_settings",
    "csv_options_from",
]

# Each optimiser's default learning rate and schedule. With standardised features and the
# default preconditioning, lr 1 is a Newton step for the squared loss; the decay averages out
# mini-batch noise (measured in tools/tune_defaults.py; see README, Design).
DEFAULT_LR = {
    "sgd": 1.0,
    "momentum": 0.1,
    "nesterov": 0.1,
    "adagrad": 1.0,
    "rmsprop": 0.05,
    "adam": 0.05,
    "adamw": 0.05,
}
DEFAULT_SCHEDULE = {
    "sgd": "invscaling",
    "momentum": "invscaling",
    "nesterov": "invscaling",
    "adagrad": "constant",
    "rmsprop": "invscaling",
    "adam": "constant",
    "adamw": "constant",
}


# Losses whose gradient keeps its size at the optimum get 0.3 times the default rate.
SUBGRADIENT_LOSSES = frozenset({"absolute", "quantile", "hinge"})
SUBGRADIENT_LR_FACTOR = 0.3


@dataclass(frozen=True)
class FitConfig(DataSettings):
    """What to train and how; everything here decides the resulting model. Each field is a
    setting's one declaration (see :mod:`streamgd.settings`)."""

    class_weight: str | None = setting(
        None,
        None,  # the API also takes a {label: weight} dict; checked as --weight
        "model",
        "logistic, hinge, softmax: 'balanced' (rows / (classes x rows of the class), from the "
        "statistics pass) or LABEL=WEIGHT pairs, e.g. 'a=2,b=1' (others weigh 1).",
        metavar="balanced|LABEL=W,...",
    )
    # -- model
    loss: str = setting(
        "squared",
        None,  # make_loss checks it against the live registry (custom losses included)
        "model",
        "squared: least squares; huber, absolute, quantile: robust regression; poisson: "
        "counts (log link); logistic: 0/1 classification (probabilities); hinge: 0/1 "
        "classification (linear SVM, decision scores).",
        choices=LOSSES,
    )
    # -- optimiser
    solver: str = setting(
        "sgd",
        Options(SOLVERS),
        "optimiser",
        "sgd: mini-batch gradient descent with --optimizer; normal: exact least squares "
        "(--loss squared, with --l2) from X'X and X'y accumulated in one streaming pass.",
    )
    optimizer: str = setting("sgd", Options(OPTIMIZERS), "optimiser")
    lr: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "optimiser",
        "Learning rate [default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_LR.items())
        + "; 0.3 times that for the absolute, quantile and hinge losses].",
    )
    # -- schedule
    schedule: str | None = setting(
        None,
        Options(SCHEDULES),
        "schedule",
        "Learning-rate schedule over the global step [default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_SCHEDULE.items())
        + "].",
    )
    power_t: float = setting(
        0.65, Interval(0), "schedule", "Exponent of --schedule invscaling: lr / (step+1)^power_t."
    )
    momentum: float = setting(
        0.9, Interval(0, 1), "optimiser", "Momentum coefficient of --optimizer momentum."
    )
    weight_decay: float | None = setting(
        None,
        Interval(0),
        "optimiser",
        "Decoupled weight decay of --optimizer adamw [default: 0.01].",
    )
    step_size: int | None = setting(
        None,
        Integer(1),
        "schedule",
        "--schedule step: multiply the rate by --gamma every N steps [default: 1000].",
    )
    gamma: float | None = setting(
        None,
        Interval(0, 1, lo_open=True),
        "schedule",
        "Decay factor of --schedule step [default: 0.5] and exponential (per step) "
        "[default: 0.999].",
    )
    decay_steps: int | None = setting(
        None,
        Integer(1),
        "schedule",
        "--schedule cosine: steps of the cosine decay after the warm-up [default: 10000].",
    )
    warmup_steps: int | None = setting(
        None, Integer(0), "schedule", "--schedule cosine: steps of linear warm-up [default: 0]."
    )
    huber_delta: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "model",
        "--loss huber: residual size, in the target's units, where the loss turns from "
        "quadratic to linear [default: 1].",
    )
    quantile: float | None = setting(
        None,
        Interval(0, 1, lo_open=True, hi_open=True, describe="a number in (0, 1)"),
        "model",
        "--loss quantile: the quantile to predict [default: 0.5, the median].",
    )
    l2: float = setting(
        0.0,
        Interval(0),
        "model",
        "L2 penalty l2/2*||w||^2 on the standardised weights (not the intercept).",
    )
    l1: float = setting(  # with l2 too: the elastic net
        0.0,
        Interval(0),
        "model",
        "L1 penalty l1*||w||_1 (proximal: weights become exactly zero); with --l2, the "
        "elastic net.",
    )
    clip_grad: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "model",
        "Clip each step's gradient (after preconditioning) to this L2 norm.",
    )
    clip_weights: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "model",
        "Clip every standardised weight to [-X, X] after each step (the classic uses 100).",
    )
    epochs: int = setting(5, Integer(1), "schedule", "Passes over the data.")
    batch_size: int = setting(
        1024,
        Integer(1),
        "schedule",
        "Rows per step (only the last batch of an epoch may be shorter).",
    )
    tol: float | None = setting(
        None,
        Interval(0, lo_open=True),
        "schedule",
        "Stop early when an epoch moves the weights by less than this (L2 norm).",
    )
    seed: int = setting(
        0, Integer(0), "schedule", "Seed of every random choice: same inputs and seed, same model."
    )
    # -- validation
    validation: tuple[str, ...] | None = setting(
        None,
        Names("paths"),
        "validation",
        "Validation files (paths/globs/directories, comma-separated or repeated): scored "
        "after every epoch (val_* in the history).",
        many="list",
    )
    holdout: float | None = setting(
        None,
        Interval(0, 1, lo_open=True, hi_open=True, describe="a fraction in (0, 1)"),
        "validation",
        "Hold out this fraction of the rows (chosen by a hash of file and row number: the "
        "same rows every epoch and after a resume) and score them after every epoch.",
    )
    holdout_rows: int | None = setting(
        None,
        Integer(1),
        "validation",
        "Hold out this many rows, drawn uniformly by seeded reservoir sampling over the files "
        "(the same rows every epoch and after a resume), and score them after every epoch.",
    )
    # -- k-fold cross-validation (streamgd.folds, streamgd.search)
    cv: int | None = setting(
        None,
        Integer(2),
        "validation",
        "K-fold cross-validation in the same pass: each row's fold is a hash of file, row "
        "number and --seed; per configuration, K models each trained without one fold and "
        "scored on it (the leaderboard: mean and std over folds), and one model on all rows "
        "(the one written to -o).",
        metavar="K",
    )
    cv_fold: int | None = setting(
        None,
        Integer(0),
        "validation",
        "With --cv K: train only the model of this fold (0 .. K-1) as the cross-validation "
        "trains it: the stream of all rows, each batch less the fold's rows, which are scored "
        "after every epoch.",
    )
    patience: int | None = setting(
        None,
        Integer(1),
        "validation",
        "Stop after N epochs without a lower validation loss, restoring the best weights.",
    )
    record_path: int | None = setting(
        None,
        Integer(1),
        "validation",
        "Record the weights every N steps (a bounded trajectory, shown by 'plot').",
    )
    # -- distributed
    shards: int | None = setting(
        None,
        Integer(1),
        "distributed",
        "With --cluster: fixed shards of row groups, one task each per round [default: 2].",
    )
    sync_every: int = setting(
        10,
        Integer(1),
        "distributed",
        "With --cluster: local steps per shard between model averages (1: synchronous SGD).",
    )
    quorum: float = setting(
        1.0,
        Interval(0.0, 1.0, lo_open=True),
        "distributed",
        "With --cluster: a round ends when this share of its shards is done; the late ones "
        "are cancelled and retake their rows next round (1: wait for all, reproducible).",
    )
    round_protocol: str = setting(
        "tasks",
        Options(ROUND_PROTOCOLS),
        "distributed",
        "With --cluster: tasks (a task per shard per round, averaged by the driver) or peer "
        "(a long-lived task per shard for a segment of rounds, averaging among themselves "
        "over a tree; agrees with tasks to ~1e-15 relative, not bit for bit).",
    )

    def __post_init__(self) -> None:
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise UsageError(f"--target must be a column name, got {self.target!r}")
        for name in LIST_SETTINGS:  # any sequence in, a tuple (or None when empty) kept
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else value  # one name, not its letters
            if value is not None and hasattr(value, "__iter__"):  # else the check says what
                object.__setattr__(self, name, tuple(value) or None)
        self.csv_options()  # its own checks
        from .features.weights import check_weight_settings  # numpy: not for --help

        object.__setattr__(self, "class_weight", check_weight_settings(self))
        check_settings(self, CONFIG_SETTINGS)
        self.make_loss(), self.make_optimizer(), self.make_schedule()  # their own checks
        check_combinations(self)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        # a subgradient does not shrink near the optimum: smaller steps settle closer
        factor = SUBGRADIENT_LR_FACTOR if self.loss in SUBGRADIENT_LOSSES else 1.0
        return DEFAULT_LR[self.optimizer] * factor

    @property
    def lr_schedule(self) -> str:
        return self.schedule if self.schedule is not None else DEFAULT_SCHEDULE[self.optimizer]

    # The components, built from these settings in one place (hyperparameters left unset
    # take each factory's own default).
    def to_dict_raw(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def validates(self) -> bool:
        """Whether each epoch ends with a validation score."""
        return bool(
            self.validation or self.holdout or self.holdout_rows or self.cv_fold is not None
        )

    @property
    def holds_out(self) -> bool:
        """Whether validation rows are held out of the training files themselves."""
        return bool(self.holdout or self.holdout_rows or self.cv_fold is not None)

    def make_loss(self):
        from .losses import make_loss

        return make_loss(self.loss, huber_delta=self.huber_delta, quantile=self.quantile)

    def make_optimizer(self):
        from .optimizers import make_optimizer

        return make_optimizer(
            self.optimizer, **_set(momentum=self.momentum, weight_decay=self.weight_decay)
        )

    def make_schedule(self):
        from .schedules import make_schedule

        return make_schedule(
            self.lr_schedule,
            self.learning_rate,
            **_set(
                power_t=self.power_t,
                step_size=self.step_size,
                gamma=self.gamma,
                decay_steps=self.decay_steps,
                warmup_steps=self.warmup_steps,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in LIST_SETTINGS:
            value = getattr(self, name)
            d[name] = list(value) if value is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must agree with to be resumed. ``epochs`` and ``tol`` are
        left out so that a finished run can be continued for more epochs."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("tol")
        return d


def _set(**hyper: Any) -> dict[str, Any]:
    return {k: v for k, v in hyper.items() if v is not None}


# The tables derived from the declarations of FitConfig and RunOptions, in field order.
CONFIG_SETTINGS: dict[str, Setting] = settings_of(FitConfig)
SETTINGS: dict[str, Setting] = {**CONFIG_SETTINGS, **RUN_SETTINGS}
LIST_SETTINGS = tuple(name for name, declared in CONFIG_SETTINGS.items() if declared.many)


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword settings split into FitConfig's and RunOptions'; a keyword that is neither is
    a UsageError naming it and the closest setting.

    >>> split_settings({"epochs": 2, "keep": 1})
    ({'epochs': 2}, {'keep': 1})
    >>> split_settings({"epoch": 2})
    Traceback (most recent call last):
    ...
    streamgd.errors.UsageError: unknown setting 'epoch' (did you mean 'epochs'?)
    """
    config, run = {}, {}
    for name, value in settings.items():
        if name in CONFIG_SETTINGS:
            config[name] = value
        elif name in RUN_SETTINGS:
            run[name] = value
        else:
            raise unknown_setting(name, SETTINGS)
    return config, run
