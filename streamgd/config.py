"""Settings of a training run: one frozen dataclass, validated once, from a declarative table
(:data:`SETTINGS`, one :class:`Setting` per field, constraints from :mod:`constraints`).

:class:`FitConfig` holds everything that decides the trained model (it is fingerprinted into
checkpoints); how a run is carried out (checkpoint cadence, progress, prefetch depth) lives in
:class:`RunOptions` and can change between a run and its resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .constraints import Constraint, Flag, Integer, Interval, Names, Options
from .errors import UsageError
from .features import INFINITE_POLICIES, MISSING_POLICIES
from .features.categorical import MAX_HASH_BITS
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULES
from .solvers import SOLVERS
from .sources import FORMATS

__all__ = ["FitConfig", "RunOptions", "DEFAULT_LR", "SETTINGS", "Setting"]

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
class FitConfig:
    """What to train and how; everything here decides the resulting model."""

    target: str
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] | None = None  # columns encoded as categories
    max_categories: int = 1000  # one-hot: the most frequent values kept per column
    hash_bits: int | None = None  # or: the hashing trick into 2**bits weights per column
    format: str = "auto"
    loss: str = "squared"
    solver: str = "sgd"  # "normal": exact least squares in one pass
    optimizer: str = "sgd"
    lr: float | None = None  # None: the optimiser's default (DEFAULT_LR)
    schedule: str | None = None  # None: the optimiser's default (DEFAULT_SCHEDULE)
    power_t: float = 0.65
    momentum: float = 0.9
    weight_decay: float | None = None  # adamw
    step_size: int | None = None  # --schedule step
    gamma: float | None = None  # --schedule step / exponential
    decay_steps: int | None = None  # --schedule cosine
    warmup_steps: int | None = None  # --schedule cosine
    huber_delta: float | None = None  # --loss huber, in the target's units
    quantile: float | None = None  # --loss quantile
    l2: float = 0.0
    l1: float = 0.0  # with l2 too: the elastic net
    clip_grad: float | None = None  # max L2 norm of a step's direction
    clip_weights: float | None = None  # clip every weight to +-this (the classic uses 100)
    epochs: int = 5
    batch_size: int = 1024
    tol: float | None = None
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 65536
    shuffle_run: int = 16  # rows the shuffle buffer moves together (1: single rows)
    standardize: bool = True
    precondition: bool = True
    missing: str = "impute"
    infinite: str = "error"  # or "missing"
    stats_rows: int = 250_000
    validation: tuple[str, ...] | None = None  # files scored after every epoch
    holdout: float | None = None  # or: this fraction of the rows, chosen by a hash of the row
    holdout_rows: int | None = None  # or: this many rows, drawn by reservoir sampling
    patience: int | None = None  # epochs without a better validation loss before stopping
    record_path: int | None = None  # record the weights every N steps
    # how CSV files are parsed (Parquet files ignore these); see sources.CsvOptions
    delimiter: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None  # names when header is False
    null_values: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] | None = None  # "column=type" entries
    shards: int | None = None  # --cluster: fixed shards of row groups (default 2)
    sync_every: int = 10  # --cluster: local steps between model averages

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise UsageError("a target column is required (--target NAME)")
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features) or None)
        for name in ("categorical", "validation", "columns", "null_values", "dtypes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value) or None)
        self.csv_options()  # its own checks
        for name, setting in SETTINGS.items():
            value = getattr(self, name)
            if setting.constraint is None or (value is None and setting.nullable):
                continue
            setting.constraint.check(name, value)
        self.make_loss(), self.make_optimizer(), self.make_schedule()  # their own checks
        if self.patience is not None and not self.validates:
            raise UsageError(
                "--patience stops on the validation loss: it needs --validation, --holdout or "
                "--holdout-rows"
            )
        if sum(map(bool, (self.validation, self.holdout, self.holdout_rows))) > 1:
            raise UsageError("use one of --validation, --holdout and --holdout-rows")
        if self.solver == "normal" and (self.l1 or self.clip_grad or self.clip_weights):
            raise UsageError("--solver normal supports --l2 only (not --l1 or clipping)")
        if self.categorical and (self.solver == "normal" or self.record_path):
            raise UsageError(
                "--categorical features are trained by gradient descent: they cannot be "
                "combined with --solver normal or --record-path"
            )
        if self.hash_bits is not None and not self.categorical:
            raise UsageError("--hash-bits encodes --categorical columns: name them too")
        if self.solver == "normal" and self.loss != "squared":
            raise UsageError(
                f"--solver normal solves least squares: it needs --loss squared, "
                f"got --loss {self.loss}"
            )

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
    def csv_options(self):
        """The CSV parse options, or None when every one is the default."""
        return csv_options_from(self.to_dict_raw())

    def to_dict_raw(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def validates(self) -> bool:
        """Whether each epoch ends with a validation score."""
        return bool(self.validation or self.holdout or self.holdout_rows)

    @property
    def holds_out(self) -> bool:
        """Whether validation rows are held out of the training files themselves."""
        return bool(self.holdout or self.holdout_rows)

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
        d["features"] = list(self.features) if self.features else None
        for name in ("categorical", "validation", "columns", "null_values", "dtypes"):
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


def _set(**hyper: Any) -> dict[str, Any]:
    return {k: v for k, v in hyper.items() if v is not None}


@dataclass(frozen=True)
class Setting:
    """One FitConfig setting's rule: its constraint, and whether None (unset) is allowed."""

    constraint: Constraint | None  # None: checked elsewhere (the target, the CSV options)
    nullable: bool = False


def _s(constraint: Constraint | None, *, nullable: bool = False) -> Setting:
    return Setting(constraint, nullable)


# The rule of every FitConfig field, in field order (a unit test holds the two together).
SETTINGS: dict[str, Setting] = {
    "target": _s(None),
    "features": _s(Names(), nullable=True),
    "categorical": _s(Names(), nullable=True),
    "max_categories": _s(Integer(1)),
    "hash_bits": _s(Integer(1, MAX_HASH_BITS), nullable=True),
    "format": _s(Options(FORMATS)),
    "loss": _s(None),
    "solver": _s(Options(SOLVERS)),
    "optimizer": _s(Options(OPTIMIZERS)),
    "lr": _s(Interval(0, lo_open=True), nullable=True),
    "schedule": _s(Options(SCHEDULES), nullable=True),
    "power_t": _s(Interval(0)),
    "momentum": _s(Interval(0, 1)),
    "weight_decay": _s(Interval(0), nullable=True),
    "step_size": _s(Integer(1), nullable=True),
    "gamma": _s(Interval(0, 1, lo_open=True), nullable=True),
    "decay_steps": _s(Integer(1), nullable=True),
    "warmup_steps": _s(Integer(0), nullable=True),
    "huber_delta": _s(Interval(0, lo_open=True), nullable=True),
    "quantile": _s(
        Interval(0, 1, lo_open=True, hi_open=True, describe="a number in (0, 1)"), nullable=True
    ),
    "l2": _s(Interval(0)),
    "l1": _s(Interval(0)),
    "clip_grad": _s(Interval(0, lo_open=True), nullable=True),
    "clip_weights": _s(Interval(0, lo_open=True), nullable=True),
    "epochs": _s(Integer(1)),
    "batch_size": _s(Integer(1)),
    "tol": _s(Interval(0, lo_open=True), nullable=True),
    "seed": _s(Integer(0)),
    "shuffle": _s(Flag()),
    "shuffle_buffer": _s(Integer(0)),
    "shuffle_run": _s(Integer(1)),
    "standardize": _s(Flag()),
    "precondition": _s(Flag()),
    "missing": _s(Options(MISSING_POLICIES)),
    "infinite": _s(Options(INFINITE_POLICIES)),
    "stats_rows": _s(Integer(0)),
    "validation": _s(Names("paths"), nullable=True),
    "holdout": _s(
        Interval(0, 1, lo_open=True, hi_open=True, describe="a fraction in (0, 1)"), nullable=True
    ),
    "holdout_rows": _s(Integer(1), nullable=True),
    "patience": _s(Integer(1), nullable=True),
    "record_path": _s(Integer(1), nullable=True),
    "delimiter": _s(None, nullable=True),
    "header": _s(Flag()),
    "columns": _s(None, nullable=True),
    "null_values": _s(None, nullable=True),
    "dtypes": _s(None, nullable=True),
    "shards": _s(Integer(1), nullable=True),
    "sync_every": _s(Integer(1)),
}


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the trained model."""

    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None  # steps
    checkpoint_interval: float | None = None  # seconds
    keep: int = 3
    resume: bool = False
    init: str | None = None  # warm start from this model file
    cluster: str | None = None  # train on Dask: local[:N], tcp://HOST:PORT, file:SCHEDULER.json
    prefetch: int = 1
    progress: bool = True
    handle_signals: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise UsageError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if self.checkpoint_interval is not None and self.checkpoint_interval <= 0:
            raise UsageError(
                f"--checkpoint-interval must be > 0 seconds, got {self.checkpoint_interval}"
            )
        if self.keep < 1:
            raise UsageError(f"--keep must be >= 1, got {self.keep}")
        if self.prefetch < 1:
            raise UsageError(f"--prefetch must be >= 1, got {self.prefetch}")
        if self.resume and not self.checkpoint_dir:
            raise UsageError("--resume needs --checkpoint-dir (or --output, which implies one)")
