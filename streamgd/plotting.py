"""Plots of a trained model: its loss curves, and its loss surface with the recorded path.

matplotlib is an optional extra (``pip install 'streamgd[plot]'``): it is imported only when a
plot is drawn, and only its object-oriented API with the Agg canvas is used (no pyplot, so no
global figure state and no display needed).

Panels, side by side:

- ``loss``: the training loss of every epoch (the loss averaged over the epoch's rows before
  each update, in the target's units) and, when the model was trained with validation files,
  the validation loss.
- ``surface`` (models with one feature, i.e. two parameters): the training objective
  ``mean(loss(z w + b, t)) + l2/2 w^2 + l1 |w|`` over a grid of ``(w, b)`` in the model's
  standardised units, computed from data files, with the recorded path (``record_path``) on
  top. Like the loss curves it is in the target's units (the standardised objective times
  ``target_scale ** scale_power``), which moves no minimum.
- ``path`` (one feature, no data files): the recorded path alone.
- ``weights`` (more features, when a path was recorded): every weight against the step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .archive import atomic_path
from .config import csv_options_from
from .decode import Decoder
from .errors import DataError, UsageError
from .model import Model
from .prefetch import Prefetcher
from .sources import FORMATS, open_source

__all__ = [
    "IMAGE_FORMATS",
    "GRID_SIZE",
    "LossSurface",
    "surface_grid",
    "loss_surface",
    "plot_model",
]

IMAGE_FORMATS = ("png", "svg", "pdf")  # picked by the output file's extension
GRID_SIZE = 61  # odd, so that the final weights are a grid point
PANEL_INCHES = (6.4, 4.8)
DPI = 100
# Rows times grid points evaluated at once: a (rows, grid) prediction block of 2 MB, which
# stays in cache (faster than larger blocks) and bounds memory whatever max_rows is.
BLOCK_CELLS = 1 << 18
# The grid reaches this factor beyond the farthest recorded point, and at least MIN_HALF_WIDTH.
PATH_MARGIN = 1.25
MIN_HALF_WIDTH = 0.25
SAMPLE_SEED = 0x504C4F54  # picks the row groups the surface reads when there are too many
MAX_LABELLED_WEIGHTS = 10
_MISSING_MATPLOTLIB = "plotting needs matplotlib: pip install 'streamgd[plot]'"


@dataclass(frozen=True)
class LossSurface:
    """The training objective on a grid: ``values[i, j]`` is at ``(weights[j], intercepts[i])``
    (standardised units), averaged over ``rows`` rows, in the target's units."""

    weights: np.ndarray
    intercepts: np.ndarray
    values: np.ndarray
    rows: int

    def minimum(self) -> tuple[float, float, float]:
        """``(weight, intercept, value)`` of the smallest grid value."""
        i, j = np.unravel_index(int(np.argmin(self.values)), self.values.shape)
        return float(self.weights[j]), float(self.intercepts[i]), float(self.values[i, j])

    def on_edge(self) -> bool:
        """Whether the smallest grid value is on the grid's border (the true minimum of the
        objective may then lie outside the grid)."""
        i, j = np.unravel_index(int(np.argmin(self.values)), self.values.shape)
        return i in (0, len(self.intercepts) - 1) or j in (0, len(self.weights) - 1)


# -- the loss surface ---------------------------------------------------------------------------
def _two_parameters(model: Model) -> None:
    if len(model.weights) != 1:
        raise UsageError(
            "a loss surface needs a model with exactly one feature (a weight and an intercept); "
            f"this model has {len(model.weights)} features"
        )


def surface_grid(model: Model, size: int = GRID_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Grids of the weight and of the intercept (standardised units), centred on the final
    parameters and reaching ``PATH_MARGIN`` times beyond the farthest recorded path point
    (at least ``MIN_HALF_WIDTH`` each way)."""
    _two_parameters(model)
    if size < 2:
        raise UsageError(f"the grid needs at least 2 points per axis, got {size}")
    center = np.array([float(model.weights[0]), model.intercept])
    reach = np.zeros(2)
    if model.trajectory is not None and len(model.trajectory):
        reach = np.abs(model.trajectory[:, 1:3] - center).max(axis=0)
    half = np.maximum(reach * PATH_MARGIN, MIN_HALF_WIDTH)
    unit = np.linspace(-1.0, 1.0, size)
    return center[0] + half[0] * unit, center[1] + half[1] * unit


def loss_surface(
    model: Model,
    data: Sequence[str],
    grid_w: np.ndarray,
    grid_b: np.ndarray,
    *,
    max_rows: int = 200_000,
    fmt: str = "auto",
) -> LossSurface:
    """The training objective of a one-feature model at every ``(grid_w[j], grid_b[i])``,
    over at most ``max_rows`` rows of ``data`` (Parquet/CSV paths, globs or directories; ``fmt``
    as for :func:`streamgd.sources.open_dataset`).

    Rows are read as for evaluation, with the model's own imputation; rows whose target is null
    are skipped. When Parquet files hold more than ``max_rows`` rows, their row groups are read
    in a seeded random order until ``max_rows`` rows were seen, so that the sample spans the
    data; CSV files are read in order. The cost is ``rows x grid points`` loss evaluations,
    in blocks of ``BLOCK_CELLS`` (bounded memory).
    """
    _two_parameters(model)
    if isinstance(data, str):
        data = [data]
    if not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise UsageError(f"max_rows must be an integer >= 1, got {max_rows!r}")
    grid_w, grid_b = np.asarray(grid_w, dtype=np.float64), np.asarray(grid_b, dtype=np.float64)
    w, b = (a.ravel() for a in np.meshgrid(grid_w, grid_b))  # row-major: b varies slowest
    loss, power = _standardised_loss(model)
    total = np.zeros(len(w))
    rows = 0
    with contextlib.closing(_sample(model, data, max_rows=max_rows, fmt=fmt)) as chunks:
        for z, t in chunks:
            total += _summed_loss(loss, z, t, w, b)
            rows += len(t)
    if rows == 0:
        raise DataError("no rows with a target value to compute the loss surface from")
    l1, l2 = float(model.config.get("l1") or 0.0), float(model.config.get("l2") or 0.0)
    objective = total / rows + 0.5 * l2 * w * w + l1 * np.abs(w)
    values = objective * model.spec.target_scale**power
    return LossSurface(grid_w, grid_b, values.reshape(len(grid_b), len(grid_w)), rows)


def _standardised_loss(model: Model):
    """The loss the model was trained with on its standardised target, and the power of the
    target scale that turns its values into the target's units."""
    loss = model.make_loss()
    if not loss.scale_target:
        return loss, 0
    return loss.rescaled(model.spec.target_scale), loss.scale_power


def _summed_loss(loss, z: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum_rows loss(z w_k + b_k, t)`` for every grid point ``k``, a block of rows at a time."""
    total = np.zeros(len(w))
    step = max(1, BLOCK_CELLS // len(w))
    for lo in range(0, len(t), step):
        zb, tb = z[lo : lo + step], t[lo : lo + step, None]
        p = zb @ w[None, :] + b  # (rows, grid points)
        total += loss.value(p, np.broadcast_to(tb, p.shape)).sum(axis=0)
    return total


def _sample(model: Model, data: Sequence[str], *, max_rows: int, fmt: str):
    """Yield ``(z, t)``: standardised feature matrix and training target, chunk by chunk, up
    to ``max_rows`` rows in all."""
    from .scoring import check_columns

    dataset = open_source(data, fmt, csv=csv_options_from(model.config))
    first = dataset.files[0].path
    spec = model.spec
    numeric = spec.read_columns(model.features)  # (what --interactions are made of)
    check_columns(dataset.schema, numeric, first, what="feature", numeric=True)
    check_columns(dataset.schema, [model.target], first, what="target", numeric=True)
    order = np.arange(len(dataset.units))
    if dataset.num_rows is not None and dataset.num_rows > max_rows:
        order = np.random.default_rng(SAMPLE_SEED).permutation(len(order))
    scaled = model.make_loss().scale_target
    seen = 0
    prefetch = Prefetcher(dataset, order, Decoder.for_scoring(model), depth=1)
    try:
        for chunk in prefetch:
            raw = chunk.rows[: max_rows - seen]
            t = spec.scaled_target(raw) if scaled else raw[:, len(spec.names)]
            z, t = spec.transform(raw), np.array(t, dtype=np.float64)  # copies: chunk reused
            prefetch.release(chunk)
            seen += len(t)
            if len(t):
                yield z, t
            if seen >= max_rows:
                break
    finally:
        prefetch.close()


# -- the figure -------------------------------------------------------------------------------
def _matplotlib():
    """The Figure class and Agg canvas, or a UsageError saying how to install matplotlib."""
    try:
        import matplotlib  # noqa: F401  (checked first: a blocked parent blocks cached children)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(_MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def _image_format(out: str) -> str:
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in IMAGE_FORMATS:
        allowed = ", ".join(f".{f}" for f in IMAGE_FORMATS)
        raise UsageError(
            f"{out}: the plot's file name must end in {allowed}, got {ext or 'none'!r}"
        )
    return ext


def plot_model(
    model: Model,
    out: str,
    *,
    data: Sequence[str] | None = None,
    max_rows: int = 200_000,
    fmt: str = "auto",
) -> dict[str, Any]:
    """Draw ``model``'s loss curves and, for a one-feature model, its loss surface with the
    recorded path (or, for more features, its weights along the path) into ``out``.

    The image format follows the extension of ``out`` (``.png``, ``.svg`` or ``.pdf``); the file
    is written atomically. ``data`` (paths, globs or directories; ``fmt`` is their format,
    ``auto``, ``parquet`` or ``csv``) is read, at most ``max_rows`` rows, only for the loss
    surface; without it the one-feature panel shows the path alone. Returns what was drawn:
    ``panels`` (names in order: ``loss``, then ``surface``, ``path`` or ``weights``),
    ``epochs``, ``curves`` (``training``, ``validation``), ``loss_scale`` (``linear`` or
    ``log``), ``path_points``, ``contour``, ``surface_rows``, ``surface_minimum`` (the grid
    point with the smallest objective: ``weight``, ``intercept``, ``loss``) and ``notes``.
    """
    image_format = _image_format(out)
    _check_data_options(fmt, max_rows)
    figure_class, canvas_class = _matplotlib()
    if isinstance(data, str):
        data = [data]
    path = model.trajectory if model.trajectory is not None and len(model.trajectory) else None
    one_feature = len(model.weights) == 1
    surface = None
    if one_feature and data:  # read the data before drawing anything: errors come first
        grid_w, grid_b = surface_grid(model)
        surface = loss_surface(model, data, grid_w, grid_b, max_rows=max_rows, fmt=fmt)
    panels, notes = _choose_panels(
        one_feature=one_feature, has_surface=surface is not None, path=path, data=data
    )
    fig = _figure(figure_class, canvas_class, len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    curves, scale = _draw_loss_curves(axes[0], model)
    if "surface" in panels or "path" in panels:
        _draw_surface(fig, axes[1], model, surface, path)
    elif "weights" in panels:
        _draw_weights(axes[1], model, path)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=image_format, dpi=DPI)
    return {
        "output": out,
        "format": image_format,
        "panels": panels,
        "epochs": len(model.history),
        "curves": curves,
        "loss_scale": scale,
        "path_points": 0 if path is None else len(path),
        "contour": surface is not None,
        "surface_rows": 0 if surface is None else surface.rows,
        "surface_minimum": _surface_minimum(surface, notes),
        "notes": notes,
    }


def _check_data_options(fmt: str, max_rows: int) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise UsageError(f"max_rows must be an integer >= 1, got {max_rows!r}")


def _choose_panels(
    *, one_feature: bool, has_surface: bool, path: np.ndarray | None, data: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The panels to draw after the loss curves, and notes on what could not be drawn."""
    panels = ["loss"]
    notes: list[str] = []
    if one_feature:
        if has_surface:
            panels.append("surface")
        elif path is not None:
            panels.append("path")
            notes.append("no data files given: the loss surface is not drawn, only the path")
    else:
        if path is not None:
            panels.append("weights")
        if data:
            notes.append("data files not read: the loss surface is drawn for one-feature models")
    if len(panels) == 1 and path is None:
        notes.append("no recorded path (train with record_path / --record-path N to draw it)")
    return panels, notes


def _figure(figure_class, canvas_class, n_panels: int):
    """A figure of ``n_panels`` side by side, attached to a canvas (no pyplot state)."""
    width, height = PANEL_INCHES
    fig = figure_class(figsize=(width * n_panels, height), dpi=DPI)
    canvas_class(fig)
    return fig


def _surface_minimum(surface, notes: list[str]) -> dict[str, float] | None:
    """The grid point with the smallest loss; notes when it is on the grid's edge."""
    if surface is None:
        return None
    w_min, b_min, value = surface.minimum()
    if surface.on_edge():
        notes.append("the grid's smallest loss is on its edge: the minimum may lie beyond it")
    return {"weight": w_min, "intercept": b_min, "loss": value}


def _loss_label(model: Model) -> str:
    loss = model.make_loss()
    params = ", ".join(f"{k.removeprefix('huber_')}={v:g}" for k, v in loss.params)
    return f"{loss.name} loss" + (f" ({params})" if params else "")


def _draw_loss_curves(ax, model: Model) -> tuple[list[str], str]:
    """Training and validation loss per epoch; returns the curves drawn and the y scale."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(f"Loss curves: {_loss_label(model)}, target {model.target!r}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss (target units)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    series = [("training", "loss", "tab:blue"), ("validation", "val_loss", "tab:orange")]
    drawn: list[float] = []
    curves = []
    for label, key, color in series:
        points = [
            (h["epoch"], float(h[key]))
            for h in model.history
            if h.get(key) is not None and np.isfinite(h[key])
        ]
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, marker="o", markersize=4, color=color, label=label)
            drawn.extend(y)
            curves.append(label)
    if not drawn:
        ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
        return curves, "linear"
    scale = "log" if min(drawn) > 0 and max(drawn) > 10 * min(drawn) else "linear"
    ax.set_yscale(scale)
    ax.legend()
    return curves, scale


def _draw_surface(fig, ax, model: Model, surface: LossSurface | None, path) -> None:
    unit = "standardised" if model.config.get("standardize", True) else "unstandardised"
    ax.set_xlabel(f"weight of {model.features[0]} ({unit})")
    ax.set_ylabel(f"intercept ({unit})")
    if surface is not None:
        _draw_contours(fig, ax, model, surface)
        ax.set_title(f"Loss surface over {surface.rows:,} rows, with the training path")
    else:
        ax.set_title("Training path (no data given: no loss surface)")
        ax.grid(True, alpha=0.3)
        grid_w, grid_b = surface_grid(model, size=2)  # the extent a surface would have
        ax.set_xlim(grid_w[0], grid_w[-1])
        ax.set_ylim(grid_b[0], grid_b[-1])
    if path is not None:
        w, b, steps = path[:, 1], path[:, 2], path[:, 0].astype(int)
        ax.plot(w, b, "-o", color="tab:red", lw=1.5, ms=2.5, label=f"path ({len(path)} points)")
        ax.plot(w[0], b[0], "s", ms=8, mfc="white", mec="black", label=f"start (step {steps[0]})")
        ax.plot(
            w[-1], b[-1], "D", ms=7, mfc="tab:red", mec="black", label=f"end (step {steps[-1]})"
        )
    final = (model.weights[0], model.intercept)
    ax.plot(*final, "*", ms=16, mfc="gold", mec="black", label="final weights")
    ax.legend(loc="best", fontsize="small", framealpha=0.85)


def _draw_contours(fig, ax, model: Model, surface: LossSurface) -> None:
    from matplotlib.ticker import MaxNLocator

    values = surface.values
    lo, hi = float(values.min()), float(values.max())
    # Levels crowd towards the minimum (quadratic spacing), where a bowl's detail is.
    levels = lo + (hi - lo) * np.linspace(0.0, 1.0, 25) ** 2 if hi > lo else None
    grid = (surface.weights, surface.intercepts, values)
    filled = ax.contourf(*grid, levels=levels, cmap="viridis")
    ax.contour(*grid, levels=filled.levels, colors="white", linewidths=0.4, alpha=0.5)
    penalty = " + penalty" if model.config.get("l2") or model.config.get("l1") else ""
    bar = fig.colorbar(filled, ax=ax, label=f"mean {model.loss} loss{penalty} (target units)")
    bar.locator = MaxNLocator(8)  # round ticks, not the unevenly spaced levels
    bar.update_ticks()
    w_min, b_min, _ = surface.minimum()
    ax.plot(w_min, b_min, "P", ms=11, mfc="white", mec="black", label="grid minimum")


def _draw_weights(ax, model: Model, path: np.ndarray) -> None:
    unit = "standardised" if model.config.get("standardize", True) else "unstandardised"
    ax.set_title(f"Weights along the path ({len(path)} points)")
    ax.set_xlabel("step")
    ax.set_ylabel(f"weight ({unit})")
    ax.grid(True, alpha=0.3)
    n = len(model.features)
    # with many features, label the largest final weights and draw the rest thin and grey
    labelled = set(np.argsort(-np.abs(path[-1, 1 : 1 + n]))[:MAX_LABELLED_WEIGHTS].tolist())
    for j, name in enumerate(model.features):
        if j in labelled:
            ax.plot(path[:, 0], path[:, 1 + j], lw=1.5, label=name)
        else:
            ax.plot(path[:, 0], path[:, 1 + j], lw=0.6, color="0.7")
    ax.plot(path[:, 0], path[:, 1 + n], "k--", lw=1.2, label="intercept")
    title = "largest weights" if n > MAX_LABELLED_WEIGHTS else None
    ax.legend(fontsize="small", title=title, ncol=2 if len(labelled) > 5 else 1)
