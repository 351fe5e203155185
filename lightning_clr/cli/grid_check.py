"""Check a range test against the searches it replaces: a grid of constant LRs, or Optuna.

``python -m lightning_clr.run -m +sweep=lr_grid`` trains one run at a constant LR for each
point of a log grid and one run whose bounds come from the range test; at the end,
:class:`lightning_clr.cli.compare.CompareRuns` hands the runs' logged numbers to
:func:`format_grid_check` and :func:`plot_grid_check`. ``+sweep=optuna_lr`` searches the
schedule, the rule and the bounds with ``hydra-optuna-sweeper`` (:func:`lr_search_space`
defines the conditional part of its search space) and :func:`plot_search_check` sets the
best trial beside one range test.

Everything here works on plain numbers (LRs, final metrics, the range-test curve), so it
holds for any model and data that log a validation metric.

Importing the module registers the OmegaConf resolver ``clr.lr_grid``, which
``conf/sweep/lr_grid.yaml`` uses to turn ``grid.start_lr``, ``grid.end_lr`` and
``grid.num_points`` into the basic sweeper's list of ``finder.bounds`` choices.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: significant digits of a grid LR, so that the override and the run's label read well
_DIGITS = 4


def log_grid(start_lr: float, end_lr: float, num_points: int) -> list[float]:
    """``num_points`` LRs evenly spaced in log LR from ``start_lr`` to ``end_lr``, both included.

    Args:
        start_lr: the lowest LR of the grid (> 0).
        end_lr: the highest LR (> ``start_lr``).
        num_points: how many LRs (>= 2).

    Raises:
        ValueError: a bound or the number of points out of range.

    Example::

        >>> log_grid(1e-3, 1.0, 4)
        [0.001, 0.01, 0.1, 1.0]
    """
    start_lr, end_lr = float(start_lr), float(end_lr)
    if not 0 < start_lr < end_lr:
        raise ValueError(f"grid.start_lr={start_lr} and grid.end_lr={end_lr} must satisfy 0 < start_lr < end_lr")
    if int(num_points) != num_points or num_points < 2:
        raise ValueError(f"grid.num_points={num_points} must be an integer >= 2 (the grid includes both ends)")
    num_points = int(num_points)
    ratio = math.log(end_lr / start_lr)
    return [float(f"{start_lr * math.exp(ratio * i / (num_points - 1)):.{_DIGITS}g}") for i in range(num_points)]


def grid_sweep(start_lr: float, end_lr: float, num_points: int) -> str:
    """The basic sweeper's choices for ``finder.bounds``: ``[lr,lr]`` per grid LR, then ``null``.

    ``[lr,lr]`` skips the range test and trains at ``lr``; the last choice, ``null``, is the
    run whose bounds the range test finds. Registered as the resolver ``clr.lr_grid``.

    Example::

        >>> grid_sweep(0.01, 1.0, 3)
        '[0.01,0.01],[0.1,0.1],[1.0,1.0],null'
    """
    return ",".join([f"[{lr!r},{lr!r}]" for lr in log_grid(start_lr, end_lr, num_points)] + ["null"])


OmegaConf.register_new_resolver("clr.lr_grid", grid_sweep, replace=True)


@dataclass
class GridCheck:
    """The numbers of one grid check, as logged by its runs.

    Attributes:
        metric: the compared scalar, e.g. ``val/acc``.
        higher_is_better: whether a larger ``metric`` is better (accuracy) or worse (loss).
        lrs: the grid's constant LRs, ascending.
        values: the final ``metric`` of the run at each LR (NaN where it was not finite).
        base_lr: the range test's ``base_lr``.
        max_lr: the range test's ``max_lr``.
        range_value: the final ``metric`` of the run trained between the range test's bounds.
        range_schedule: that run's schedule (class name).
        curve_lrs: the range test's LRs (``range_test/lr``), one per sweep step.
        curve_losses: its smoothed losses (``range_test/loss``).
        curve_raw: its raw losses (``range_test/loss_raw``), empty when not logged.
        range_lr: the LR the range-test run trained at when its logged LR was constant
            (the constant schedule), else None.
        unfinished_lrs: grid LRs whose run's event file was cut short: their value is the last one read.
        range_unfinished: whether the range-test run's event file was cut short.
        range_shape: the range-test run's schedule with its shape, as the run recorded it
            (``""`` when it recorded none).
        range_lr_moved: ``(lowest, highest)`` LR the range-test run logged when it moved, else None.
    """

    metric: str
    higher_is_better: bool
    lrs: list[float]
    values: list[float]
    base_lr: float
    max_lr: float
    range_value: float | None = None
    range_schedule: str = "?"
    curve_lrs: list[float] = field(default_factory=list)
    curve_losses: list[float] = field(default_factory=list)
    curve_raw: list[float] = field(default_factory=list)
    range_lr: float | None = None
    unfinished_lrs: list[float] = field(default_factory=list)
    range_unfinished: bool = False
    range_shape: str = ""
    range_lr_moved: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if len(self.lrs) != len(self.values) or len(self.lrs) < 2:
            raise ValueError(f"a grid check needs >= 2 grid runs with one value each, got {len(self.lrs)} LRs "
                             f"and {len(self.values)} values")
        order = sorted(range(len(self.lrs)), key=self.lrs.__getitem__)
        self.lrs = [float(self.lrs[i]) for i in order]
        self.values = [float(self.values[i]) for i in order]

    @property
    def best(self) -> tuple[float, float]:
        """``(lr, value)`` of the best grid run."""
        finite = [(lr, v) for lr, v in zip(self.lrs, self.values) if math.isfinite(v)]
        if not finite:
            return self.lrs[0], float("nan")
        return (max if self.higher_is_better else min)(finite, key=lambda p: p[1])

    def value_at(self, lr: float) -> float | None:
        """The grid's curve at ``lr``, linear in log LR between neighbours; None outside the grid."""
        if not self.lrs[0] <= lr <= self.lrs[-1]:
            return None
        i = min(bisect.bisect_right(self.lrs, lr), len(self.lrs) - 1)
        lo, hi = self.lrs[i - 1], self.lrs[i]
        t = math.log(lr / lo) / math.log(hi / lo)
        return self.values[i - 1] + t * (self.values[i] - self.values[i - 1])

    @property
    def range_is_constant(self) -> bool | None:
        """Whether the range-test run trained one constant LR, as the grid's runs do; None when unknown.

        Its logged LR decides when it logged one (a schedule whose bounds coincide is constant
        too); else the schedule it recorded (``Constant`` or not).
        """
        if self.range_lr is not None or self.range_lr_moved is not None:
            return self.range_lr is not None
        if self.range_schedule in ("", "?"):
            return None
        return self.range_schedule == "Constant"

    def fairness(self) -> str:
        """One line: whether the range-test run trained a constant LR, as the grid does, or a schedule."""
        shape = self.range_shape or self.range_schedule
        constant = self.range_is_constant
        if constant is None:
            return ("range-test run: its schedule was not recorded and it logged no LR, so whether it trained a "
                    "constant LR as the grid does is unknown")
        if constant:
            at = f" at {self.range_lr:.4g}" if self.range_lr is not None else ""
            return (f"range-test run: {shape}, a constant LR{at} like every grid run: a like-for-like "
                    "comparison of the LR the range test picked")
        moved = (f" (its LR moved from {self.range_lr_moved[0]:.3g} to {self.range_lr_moved[1]:.3g})"
                 if self.range_lr_moved is not None else "")
        return (f"range-test run: {shape} between the bounds{moved}, a schedule, while every grid run trains a "
                "constant LR: the comparison mixes a schedule against constants, so it measures the schedule and "
                "the pick together (+schedule=constant compares the pick alone)")

    def where(self, lr: float) -> str:
        """Where ``lr`` falls on the grid, in words, e.g. ``between grid LRs 0.01 and 0.1``."""
        if lr < self.lrs[0]:
            return f"below the grid (lowest LR {self.lrs[0]:.4g})"
        if lr > self.lrs[-1]:
            return f"above the grid (highest LR {self.lrs[-1]:.4g})"
        i = bisect.bisect_left(self.lrs, lr)
        if math.isclose(self.lrs[i], lr, rel_tol=1e-6):
            return f"on grid LR {self.lrs[i]:.4g}"
        return f"between grid LRs {self.lrs[i - 1]:.4g} and {self.lrs[i]:.4g}"


def plot_grid_check(check: GridCheck, path: str | Path) -> Path:
    """Write a PNG: the grid's final metric against LR, the bounds marked, the range-test curve below.

    Both panels share the log-LR axis, so the range test's ``base_lr``/``max_lr`` (dashed) and
    the band between them read against the grid's curve and the sweep's loss at once.
    """
    plt = _pyplot()
    fig, (ax_grid, ax_curve) = plt.subplots(2, 1, sharex=True, figsize=(8, 7), dpi=100,
                                            height_ratios=(3, 2), layout="constrained")
    ax_grid.plot(check.lrs, check.values, "o-", color="C0", lw=1.8, label=f"constant LR: final {check.metric}")
    best_lr, best_value = check.best
    ax_grid.plot([best_lr], [best_value], "*", color="C0", ms=14, label=f"best grid LR {best_lr:.3g}")
    if check.range_value is not None and check.range_lr is not None:  # it sits on the grid's axis
        ax_grid.plot([check.range_lr], [check.range_value], "D", color="C3", ms=8,
                     label=f"range-test run at {check.range_lr:.3g}: {check.range_value:.4f}")
    elif check.range_value is not None:
        ax_grid.axhline(check.range_value, color="C3", lw=1.2, ls=":",
                        label=f"range-test run ({check.range_schedule}): {check.range_value:.4f}")
    for ax in (ax_grid, ax_curve):
        ax.axvspan(check.base_lr, check.max_lr, color="C1", alpha=0.12)
        for name, lr in (("base_lr", check.base_lr), ("max_lr", check.max_lr)):
            ax.axvline(lr, color="C1", ls="--", lw=1.2, label=f"{name} {lr:.3g}" if ax is ax_grid else None)
        ax.grid(alpha=0.3, which="both")
    if check.curve_lrs:
        if check.curve_raw:
            ax_curve.plot(check.curve_lrs, check.curve_raw, color="0.6", lw=0.8, label="raw loss")
        ax_curve.plot(check.curve_lrs, check.curve_losses, color="C2", lw=1.6, label="smoothed loss")
        ax_curve.legend(fontsize=8, loc="upper left")
        finite = [v for v in check.curve_losses if math.isfinite(v)]
        if finite:  # the divergence at the end of a sweep would flatten the valley
            low, start = min(finite), finite[0]
            ax_curve.set_ylim(low - 0.1 * abs(start - low) - 1e-3, start + 0.6 * abs(start - low) + 1e-3)
    else:
        ax_curve.text(0.5, 0.5, "no range_test/lr, range_test/loss logged", ha="center", va="center",
                      transform=ax_curve.transAxes, color="0.4")
    ax_grid.set(ylabel=f"final {check.metric}", title="grid of constant LRs vs. the range test")
    ax_curve.set(xlabel="learning rate", ylabel="range-test loss", xscale="log")
    ax_grid.legend(fontsize=8, loc="best")
    return _save(fig, path)


def lr_search_space(cfg: DictConfig, trial: Any) -> None:
    """The conditional part of ``+sweep=optuna_lr``'s search (``hydra.sweeper.custom_search_space``).

    Trial 0 is the reference: one range test with the config's rule. Every later trial draws
    ``search.bounds_from``: ``range_test`` draws the selection rule (``finder.rule``),
    ``explicit`` draws ``search.base_lr`` on a log scale and ``search.max_lr`` above it, between
    ``search.min_ratio`` and ``search.max_ratio`` times ``base_lr``. The schedule is drawn by the
    sweeper's own ``params``. Parameter names are config keys: the sweeper turns each into an
    override.

    Args:
        cfg: the composed multirun config (reads the ``search`` node).
        trial: the ``optuna.trial.Trial`` being configured.
    """
    space = cfg.search
    if trial.number == 0:
        return
    source = trial.suggest_categorical("search.bounds_from", ["range_test", "explicit"])
    if source == "range_test":
        trial.suggest_categorical("finder.rule", list(space.rules))
        return
    base = trial.suggest_float("search.base_lr", float(space.start_lr), float(space.end_lr), log=True)
    low, high = base * float(space.min_ratio), min(base * float(space.max_ratio), float(space.end_lr) * 10)
    trial.suggest_float("search.max_lr", low, max(low, high), log=True)


@dataclass
class SearchCheck:
    """The best trial of a search against one range test.

    Attributes:
        metric: the objective the search maximised (the run's return value, final ``val/acc``).
        best_value: the best trial's value (``optimization_results.yaml``).
        best_params: the best trial's parameters.
        best_bounds: the bounds the best trial trained between.
        best_curve: ``(epoch, metric)`` of the best trial.
        range_bounds: the reference range test's ``(base_lr, max_lr)``.
        range_value: the final metric of the reference run.
        range_curve: ``(epoch, metric)`` of the reference run.
        curve_lrs: the reference range test's LRs.
        curve_losses: its smoothed losses.
        num_trials: trials in the search.
    """

    metric: str
    best_value: float
    best_params: dict[str, Any]
    best_bounds: tuple[float, float] | None
    best_curve: list[tuple[int, float]]
    range_bounds: tuple[float, float]
    range_value: float
    range_curve: list[tuple[int, float]]
    curve_lrs: list[float] = field(default_factory=list)
    curve_losses: list[float] = field(default_factory=list)
    num_trials: int = 0


def plot_search_check(check: SearchCheck, path: str | Path) -> Path:
    """Write a PNG: the range-test curve with both pairs of bounds (left), both runs' metric per epoch (right)."""
    plt = _pyplot()
    fig, (ax_lr, ax_run) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, layout="constrained")
    if check.curve_lrs:
        ax_lr.plot(check.curve_lrs, check.curve_losses, color="C2", lw=1.6, label="range-test loss")
    ax_lr.axvspan(*check.range_bounds, color="C1", alpha=0.15, label="range test's bounds")
    if check.best_bounds:
        ax_lr.axvspan(*check.best_bounds, color="C0", alpha=0.15, hatch="//", label="best trial's bounds")
    ax_lr.set(xscale="log", xlabel="learning rate", ylabel="range-test loss", title="bounds")
    if check.best_curve:
        ax_run.plot(*zip(*check.best_curve), "o-", color="C0", ms=3, label=f"best trial: {check.best_value:.4f}")
    if check.range_curve:
        ax_run.plot(*zip(*check.range_curve), "o-", color="C1", ms=3, label=f"one range test: {check.range_value:.4f}")
    ax_run.set(xlabel="epoch", ylabel=check.metric, title=f"{check.metric} per epoch")
    for ax in (ax_lr, ax_run):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def bounds_pair(values: Any) -> tuple[float, float] | None:
    """``(base_lr, max_lr)`` from a config's ``finder.bounds``, or None when it is not a pair of numbers."""
    if not isinstance(values, (list, tuple)) or len(values) != 2 or any(v is None for v in values):
        return None
    try:
        return float(values[0]), float(values[1])
    except (TypeError, ValueError):
        return None
