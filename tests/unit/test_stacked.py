"""The stacked step of a grid's models against each model's own step, to the bit.

Oracle: :func:`streamgd.step.train_step` run model by model (a plain loop) on the same
batches; every stacked step's weights, optimiser state, summed loss and predictions must be
``np.array_equal`` to it, step after step, for every supported loss, optimiser,
preconditioning, penalty and clipping, models in several blocks (``--cv`` folds), batches
of odd sizes and of either memory layout. Also the running metrics against
:class:`Accumulator`, and which members are stacked."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamgd.losses import identity, make_loss, sigmoid
from streamgd.metrics import Accumulator, StackedMetrics
from streamgd.optimizers import make_optimizer
from streamgd.search.stacked import (
    STACKED_LOSSES,
    Block,
    Hyper,
    stack_key,
    stack_states,
    stacked_optimizer,
    stacked_step,
    unstack_state,
)
from streamgd.step import train_step

N_FEAT = 5


def _config(**kw):
    base = dict(
        optimizer="sgd",
        momentum=0.9,
        weight_decay=None,
        l2=0.0,
        l1=0.0,
        clip_grad=None,
        clip_weights=None,
        cv_fold=None,
        solver="sgd",
    )
    base.update(kw)
    config = SimpleNamespace(**base)
    config.make_optimizer = lambda: make_optimizer(
        config.optimizer,
        **({} if config.optimizer != "momentum" else {"momentum": config.momentum}),
    )
    return config


def _target(loss, rng, n):
    if loss.task == "binary" or loss.name == "hinge":
        return (rng.random(n) < 0.5).astype(np.float64)
    if loss.name == "poisson":
        return rng.poisson(2.0, n).astype(np.float64)
    return rng.normal(size=n)


def _batch(rng, rows, loss, layout):
    raw = rng.normal(size=(rows, N_FEAT + 1)).astype(np.float32)
    raw = np.asfortranarray(raw) if layout == "F" else np.ascontiguousarray(raw)
    return raw[:, :N_FEAT], _target(loss, rng, rows)


class _Both:
    """A stack of models trained stacked and, as the oracle, one by one with train_step."""

    def __init__(self, configs, loss, rng, precond):
        self.configs, self.loss, self.precond = configs, loss, precond
        self.inv_scale = rng.uniform(0.5, 2.0, N_FEAT)
        self.params = rng.normal(size=(len(configs), N_FEAT + 1)) * 0.3
        self.optimizers = [c.make_optimizer() for c in configs]
        self.alone = [p.copy() for p in self.params]
        self.alone_opt = [o.init(p) for o, p in zip(self.optimizers, self.alone, strict=True)]
        self.opt = stack_states(self.alone_opt)
        self.hyper, self.optimizer = Hyper(configs), stacked_optimizer(configs)
        self.lr = np.array([c.lr for c in configs])[:, None]

    def step(self, blocks):
        new, self.opt, sums, preds = stacked_step(
            self.params,
            self.opt,
            blocks,
            loss=self.loss,
            optimizer=self.optimizer,
            lr=self.lr,
            hyper=self.hyper,
            inv_scale=self.inv_scale,
            precond=self.precond,
        )
        for block, p in zip(blocks, preds, strict=True):
            for j in range(block.start, block.stop):
                self._check(j, block, new[j], sums[j], p[j - block.start])
        self.params = new

    def _check(self, j, block, new, loss_sum, p):
        c = self.configs[j]
        one, one_opt, one_sum, one_p = train_step(
            self.alone[j],
            self.alone_opt[j],
            block.x,
            block.t,
            loss=self.loss,
            optimizer=self.optimizers[j],
            lr=float(self.lr[j, 0]),
            l2=c.l2,
            inv_scale=self.inv_scale,
            precond=self.precond,
            l1=c.l1,
            clip_grad=c.clip_grad,
            clip_weights=c.clip_weights,
        )
        assert np.array_equal(new, one, equal_nan=True), (j, new, one)
        assert np.array_equal(loss_sum, one_sum, equal_nan=True)
        assert np.array_equal(p, one_p, equal_nan=True)
        back = unstack_state(self.opt, j, one_opt)
        assert back.keys() == one_opt.keys()
        for key, value in one_opt.items():
            assert back[key].shape == np.shape(value)
            assert back[key].dtype == np.asarray(value).dtype
            assert np.array_equal(back[key], value, equal_nan=True)
        self.alone[j], self.alone_opt[j] = one, one_opt


def _run(configs, loss, *, seed, precond, folds=(None,), steps=25, layout="F"):
    """Train ``configs`` (each with its cv_fold among ``folds``: one block each, each on
    batches of its own) stacked and alone, asserting every step equal; the final params."""
    rng = np.random.default_rng(seed)
    configs = sorted(configs, key=lambda c: folds.index(c.cv_fold))
    both = _Both(configs, loss, rng, precond)
    starts = [[c.cv_fold for c in configs].index(f) for f in folds]
    bounds = list(zip(starts, [*starts[1:], len(configs)], strict=True))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # as the grid runs
        for _ in range(steps):
            sizes = rng.choice([1, 2, 7, 64, 255, 300, 1023], size=len(folds))
            both.step(
                [
                    Block(*_batch(rng, int(n), loss, layout), a, b)
                    for n, (a, b) in zip(sizes, bounds, strict=True)
                ]
            )
    return both.params


def _precond(rng):
    a = rng.normal(size=(N_FEAT, N_FEAT))
    return np.linalg.inv(a @ a.T / N_FEAT + np.eye(N_FEAT))


LR_L2 = [_config(lr=lr, l2=l2) for lr in (0.3, 0.03) for l2 in (0.0, 1e-3, 0.1)]


@pytest.mark.parametrize("loss_name", sorted(STACKED_LOSSES))
@pytest.mark.parametrize("preconditioned", [False, True])
def test_each_loss_equals_its_models_alone(loss_name, preconditioned):
    loss = make_loss(loss_name)
    for seed in (0, 1):
        rng = np.random.default_rng(100 + seed)
        precond = _precond(rng) if preconditioned else None
        _run(LR_L2, loss, seed=seed, precond=precond)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "nesterov", "adagrad", "rmsprop"])
@pytest.mark.parametrize("loss_name", ["squared", "logistic"])
def test_each_optimizer_equals_its_models_alone(optimizer, loss_name):
    configs = [
        _config(optimizer=optimizer, lr=lr, l2=l2, momentum=mom)
        for lr in (0.5, 0.05)
        for l2 in (0.0, 1e-2)
        for mom in ((0.5, 0.9) if optimizer == "momentum" else (0.9,))
    ]
    loss = make_loss(loss_name)
    for seed in (2, 3):
        rng = np.random.default_rng(seed)
        _run(configs, loss, seed=seed, precond=_precond(rng))
        _run(configs, loss, seed=seed, precond=None, layout="C")


def test_l1_zeros_clipping_and_mixed_settings():
    configs = [
        _config(lr=0.5, l1=l1, l2=l2, clip_grad=cg, clip_weights=cw)
        for l1 in (0.0, 0.05)
        for l2 in (0.0, 1e-2)
        for cg in (None, 0.1)
        for cw in (None, 0.2)
    ]
    for name in ("squared", "logistic", "huber"):
        params = _run(configs, make_loss(name), seed=5, precond=None, steps=30)
        with_l1 = [j for j, c in enumerate(configs) if c.l1]
        assert (params[with_l1, :N_FEAT] == 0.0).any()  # the proximal step zeroed some


def test_models_in_blocks_of_their_folds():
    configs = [
        _config(lr=lr, l2=l2, cv_fold=fold)
        for fold in (None, 0, 1, 2)
        for lr in (0.3,)
        for l2 in (0.0, 1e-3)
    ]
    for name in ("squared", "logistic"):
        rng = np.random.default_rng(9)
        _run(configs, make_loss(name), seed=9, precond=_precond(rng), folds=(None, 0, 1, 2))


def test_diverging_models_equal_their_runs_alone_until_they_diverge():
    configs = [_config(lr=lr) for lr in (1e8, 0.1, 1e4)]
    params = _run(configs, make_loss("squared"), seed=4, precond=None, steps=12)
    assert not np.isfinite(params[0]).all() and np.isfinite(params[1]).all()


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_stacked_metrics_equal_each_accumulator(task):
    rng = np.random.default_rng(8)
    m = 5
    link = identity if task == "regression" else sigmoid
    unit, center = (2.5, -1.0) if task == "regression" else (1.0, 0.0)
    alone = [Accumulator(task, auc=False) for _ in range(m)]
    stacked = StackedMetrics([Accumulator(task, auc=False) for _ in range(m)], unit, center, link)
    assert stacked.kind == task
    for rows in (7, 1024, 1, 300, 33):
        t = rng.normal(size=rows) if task == "regression" else (rng.random(rows) < 0.4) * 1.0
        p = rng.normal(size=(m, rows)) * 3
        stacked.update(t, p)
        for acc, row in zip(alone, p, strict=True):
            acc.update_scaled(t, row, unit, center, link)
    for j, acc in enumerate(alone):
        stacked.write(j)
        mine, theirs = stacked.accs[j].state(), acc.state()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.array_equal(mine[key], theirs[key]), key
        assert stacked.accs[j].result() == acc.result()


def test_which_members_are_stacked():
    spec = SimpleNamespace(categoricals=(), texts=(), weighting=None)
    squared = make_loss("squared")
    key = stack_key(_config(lr=0.1), spec, squared, "sgd")
    assert key is not None
    # the fold and the grid's learning rate and penalties do not split a group
    assert stack_key(_config(lr=0.5, l2=1.0, cv_fold=3), spec, squared, "sgd") == key
    # momentum varies within a group of momentum models, not of nesterov ones
    mom = [
        stack_key(_config(optimizer="momentum", momentum=v), spec, squared, "sgd")
        for v in (0.5, 0.9)
    ]
    assert mom[0] == mom[1]
    nest = [
        stack_key(_config(optimizer="nesterov", momentum=v), spec, squared, "sgd")
        for v in (0.5, 0.9)
    ]
    assert nest[0] != nest[1]
    # each loss parameter value is a group of its own
    huber = [make_loss("huber", huber_delta=d) for d in (1.0, 2.0)]
    assert stack_key(_config(), spec, huber[0], "sgd") != stack_key(
        _config(), spec, huber[1], "sgd"
    )
    # what takes its own step
    assert stack_key(_config(optimizer="adamw"), spec, squared, "sgd") is None
    assert stack_key(_config(), spec, squared, "normal") is None
    assert stack_key(_config(), spec, make_loss("softmax"), "sgd") is None
    for other in (dict(categoricals=("c",)), dict(texts=("t",)), dict(weighting=object())):
        assert (
            stack_key(_config(), SimpleNamespace(**{**vars(spec), **other}), squared, "sgd") is None
        )
