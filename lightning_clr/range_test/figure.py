"""What a person needs to trust the bounds: the range-test curve with ``base_lr`` and ``max_lr`` marked.

Tags written (TensorBoard):

- ``range_test/loss``, ``range_test/loss_raw``, ``range_test/lr``: the sweep, one point per
  sweep step (the step axis is the sweep step).
- ``range_test/curve``: a figure of loss vs. LR with ``base_lr`` and ``max_lr`` marked.
- hparams ``range_test/base_lr``, ``range_test/max_lr``, ``range_test/schedule`` (the schedule
  installed between them, class and shape, e.g. ``Triangular(step_epochs=None, ..., num_cycles=1, ...)``),
  and ``range_test/fallback`` (why) when the curve could not be read and a documented fallback
  chose the bounds. ``python -m lightning_clr.cli.compare`` reads the schedule from here.

The generalization gap is logged by :class:`lightning_clr.callbacks.GeneralizationGap`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_clr.range_test.result import RangeTestResult
    from lightning_clr.schedules import Schedule


def plot_range_test(result: RangeTestResult, ax: Any = None) -> Figure:
    """Loss vs. LR (raw and smoothed) with the chosen bounds marked.

    Args:
        result: a finished range test.
        ax: a matplotlib axis to draw on; a new figure is made when ``None``.

    Returns:
        The matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    else:
        fig = ax.figure
    ax.plot(result.lrs, result.raw_losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.losses, color="C0", lw=2, label="smoothed loss")
    if len(result.lrs) > 2 and result.lrs[-1] / result.lrs[0] > 50:
        ax.set_xscale("log")
    ax.axvline(result.base_lr, color="C2", ls="--", label=f"base_lr = {result.base_lr:.3g}")
    ax.axvline(result.max_lr, color="C3", ls="--", label=f"max_lr = {result.max_lr:.3g}")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:  # keep the blow-up at the end from flattening the interesting part
        low, start = min(finite), finite[0]
        ax.set_ylim(low - 0.1 * (start - low + 1e-12), start + 0.5 * (start - low + 1e-12))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    reruns = f", {result.reruns} rerun(s) of a shallow sweep" if result.reruns else ""
    title = f"LR range test ({result.rule} rule, {result.stop_reason}{reruns})"
    if result.fallback:
        title += "\nfallback: " + result.fallback
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def range_test_hparams(result: RangeTestResult, schedule: Schedule | None) -> dict[str, Any]:
    """The hparams a range test logs: its bounds, the schedule trained between them, the fallback if one chose them.

    Example::

        >>> from lightning_clr import schedules
        >>> from lightning_clr.range_test.result import RangeTestResult
        >>> result = RangeTestResult([], [], [], 0.01, 0.1, "smith", "completed")
        >>> range_test_hparams(result, schedules.Constant())
        {'range_test/base_lr': 0.01, 'range_test/max_lr': 0.1, 'range_test/schedule': 'Constant(position=0.5)'}
    """
    hparams: dict[str, Any] = {"range_test/base_lr": result.base_lr, "range_test/max_lr": result.max_lr}
    if schedule is not None:  # class and shape, as the spec's repr writes them
        hparams["range_test/schedule"] = repr(schedule)
    if result.fallback:  # the curve could not be read: say so next to the bounds
        hparams["range_test/fallback"] = result.fallback
    return hparams


def _installed_schedule(trainer: L.Trainer, result: RangeTestResult) -> Schedule | None:
    """The schedule of the range-test callback whose result ``result`` is, if it is among the Trainer's callbacks."""
    owner = next((c for c in trainer.callbacks if getattr(c, "result", None) is result), None)
    return getattr(owner, "schedule", None)


@rank_zero_only
def log_range_test(trainer: L.Trainer, result: RangeTestResult, schedule: Schedule | None = None) -> None:
    """Write the sweep, the figure, the bounds and the schedule to every logger of ``trainer`` (rank zero).

    Args:
        trainer: the Trainer whose loggers receive it.
        result: the finished range test.
        schedule: the schedule installed between the bounds; ``None`` takes the one of the
            range-test callback among ``trainer.callbacks`` whose result ``result`` is.
    """
    if not trainer.loggers:
        return
    bounds = range_test_hparams(result, schedule or _installed_schedule(trainer, result))
    for logger in trainer.loggers:
        for i, (lr, loss, raw) in enumerate(zip(result.lrs, result.losses, result.raw_losses)):
            logger.log_metrics({"range_test/lr": lr, "range_test/loss": loss, "range_test/loss_raw": raw}, step=i)
        logger.log_hyperparams(bounds)
        if isinstance(logger, TensorBoardLogger):
            fig = plot_range_test(result)
            fig.savefig(Path(logger.log_dir) / "range_test.png")
            logger.experiment.add_figure("range_test/curve", fig, global_step=0, close=True)  # closes fig
        # no logger.save() here: TensorBoardLogger writes hparams.yaml once, and the module's own
        # hyperparameters are logged after on_fit_start; Lightning saves at the end of fit
