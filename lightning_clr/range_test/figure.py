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
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

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
    # class and shape, as the spec's repr writes them
    hparams["range_test/schedule"] = repr(schedule) if schedule is not None else "none (Schedule-Free optimizer)"
    if result.fallback:  # the curve could not be read: say so next to the bounds
        hparams["range_test/fallback"] = result.fallback
    return hparams


def failed_write(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err`` (itself, or a cause: loggers wrap it), when ``err`` is a failed write.

    A full disk (``ENOSPC``), a read-only or vanished folder: what a diagnostics write may meet
    on a long run, and no reason to stop training.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_cause(err: OSError) -> str:
    """The reason a write failed, in words, e.g. ``No space left on device``."""
    if err.strerror:
        return err.strerror
    return os.strerror(err.errno) if err.errno else str(err) or type(err).__name__


def _attempt(write: Callable[[], Any], what: str, where: str | Path, result: RangeTestResult) -> bool:
    """Run ``write``; a failed write warns on one line (what, where, why, the bounds kept) and returns False."""
    try:
        write()
    except (OSError, ValueError) as err:
        failure = failed_write(err)
        if failure is None:
            raise
        rank_zero_warn(f"LRRangeTest: could not write {what} to '{where}' ({write_cause(failure)}); training goes "
                       f"on with base_lr={result.base_lr:.4g}, max_lr={result.max_lr:.4g} (finder.result keeps the "
                       "curve)")
        return False
    return True


def _log_curve(logger: Logger, result: RangeTestResult) -> None:
    for i, (lr, loss, raw) in enumerate(zip(result.lrs, result.losses, result.raw_losses)):
        logger.log_metrics({"range_test/lr": lr, "range_test/loss": loss, "range_test/loss_raw": raw}, step=i)


@rank_zero_only
def log_range_test(trainer: L.Trainer, result: RangeTestResult, schedule: Schedule | None) -> None:
    """Write the sweep, the figure, the bounds and the schedule to every logger of ``trainer`` (rank zero).

    Explicit bounds (no sweep) write only the bounds and the schedule.

    These are diagnostics: a write that fails (a full disk, a read-only folder) warns on one
    line naming the file and the cause, and training goes on with the bounds in ``finder.result``.

    Args:
        trainer: the Trainer whose loggers receive it.
        result: the finished range test.
        schedule: the schedule installed between the bounds; ``None`` when none is (a
            Schedule-Free optimizer trains at ``max_lr`` with its own warm-up).
    """
    if not trainer.loggers:
        return
    bounds = range_test_hparams(result, schedule)
    for logger in trainer.loggers:
        _log_to(logger, result, bounds)
        # no logger.save() here: TensorBoardLogger writes hparams.yaml once, and the module's own
        # hyperparameters are logged after on_fit_start; Lightning saves at the end of fit


def _log_to(logger: Logger, result: RangeTestResult, hparams: dict[str, Any]) -> None:
    """The curve, the hparams and (TensorBoard) the figure, each write on its own: one that fails only warns."""
    where = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or type(logger).__name__
    if result.lrs and not _attempt(partial(_log_curve, logger, result), "the range test's curve", where, result):
        return  # the logger cannot write: one warning is enough
    _attempt(partial(logger.log_hyperparams, hparams), "the range test's bounds (hparams)", where, result)
    if not result.lrs or not isinstance(logger, TensorBoardLogger):
        return
    import matplotlib.pyplot as plt

    fig = plot_range_test(result)
    try:
        png = Path(logger.log_dir) / "range_test.png"
        _attempt(partial(fig.savefig, png), "the range-test figure", png, result)
        _attempt(partial(_add_figure, logger, fig), "the range-test figure (range_test/curve)", where, result)
    finally:
        plt.close(fig)


def _add_figure(logger: TensorBoardLogger, fig: Figure) -> None:
    logger.experiment.add_figure("range_test/curve", fig, global_step=0, close=False)  # closed by the caller
