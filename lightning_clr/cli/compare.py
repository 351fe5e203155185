"""Compare training runs side by side from their TensorBoard files.

Usage::

    python -m lightning_clr.cli.compare RUN_DIR [RUN_DIR ...] [--target 0.9] [--png compare.png]

Each ``RUN_DIR`` is searched for TensorBoard event files, so a Hydra run folder, a multirun
folder (one run per job) or a ``version_N`` log folder all work. For every run the table shows
the schedule it trained, as the run recorded it (hparam ``range_test/schedule``, class and shape,
logged by the range test; else the ``schedule`` node of its ``.hydra/config.yaml``; ``?`` when
it recorded neither: no default is assumed), the LR bounds (hparams ``range_test/base_lr``,
``range_test/max_lr``, or the config's ``finder.bounds`` when the range test was skipped), the
best and final ``val/acc``, the epochs until ``val/acc`` first reached ``target``, and the best
``ensemble/val_acc`` when a :class:`~lightning_clr.SnapshotEnsemble` logged one. A PNG puts the
val-accuracy curves and the LR schedules of all runs side by side.

Each event file is opened once and read in one pass (its records' checksums verified together);
only the values of the tags shown are kept, so the time grows linearly with the number of
files (``benchmarks/compare_scaling.py`` measures it). An event file cut mid-record marks its
run ``(unfinished)``; a YAML file that cannot be read as what it should hold is skipped with
one line naming it and its run, and the run is compared without it.

Runs are labelled by the overrides that differ between them (the ones all runs share say
nothing). When the runs hold a grid of constant LRs (``finder.bounds=[lr,lr]``, as
``+sweep=lr_grid`` trains) and a range test, the output adds the grid check: where the range
test's bounds fall on the grid's curve of final metric against LR (:mod:`lightning_clr.cli.grid_check`
draws its figure); after ``+sweep=optuna_lr`` it adds the best trial against one range test.

In a Hydra multirun, :class:`CompareRuns` (a Hydra callback) prints the same when the
sweep ends: ``hydra.callbacks.compare._target_=lightning_clr.cli.compare.CompareRuns``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback

from lightning_clr.cli.events import EVENT_GLOB, EventFile, masked_crc32c, read_event_file
from lightning_clr.cli.grid_check import plot_grid_check, plot_search_check
from lightning_clr.cli.runs import CURVE_TAGS, Run, distinct_labels, find_log_dirs, load_run
from lightning_clr.cli.sweep_checks import (
    format_grid_check,
    format_search_check,
    grid_check,
    not_constant,
    search_check,
)
from lightning_clr.cli.table import UNFINISHED, format_table, markdown, summarize

__all__ = [
    "CURVE_TAGS", "EVENT_GLOB", "LEGEND_RUNS", "OPTUNA_RESULTS", "CompareRuns", "EventFile", "Run", "compare",
    "distinct_labels", "find_log_dirs", "format_grid_check", "format_search_check", "format_table", "grid_check",
    "load_run", "main", "markdown", "masked_crc32c", "plot_runs", "read_event_file", "runs_figure",
    "search_check", "summarize",
]

#: what the Optuna sweeper writes into the sweep folder
OPTUNA_RESULTS = "optimization_results.yaml"
#: runs a figure's legend names; a larger sweep is drawn without one (the table names every run)
LEGEND_RUNS = 20


def runs_figure(runs: Sequence[Run], target: float | None = None) -> Any:
    """The comparison figure: val accuracy per epoch (left), the LR per step (right), one legend below.

    The runs share one legend under both panels (a run has the same colour in each), with
    long labels wrapped; the figure grows taller with the legend, so the panels keep their
    width and height whatever the labels. Beyond ``LEGEND_RUNS`` runs the legend is left out
    (a legend of thousands of rows would make the figure too tall to save) and the title says so.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    width = 58 if len(runs) > 1 else 110
    named = len(runs) <= LEGEND_RUNS
    labels = [textwrap.fill(f"{run.label} ({run.schedule}){UNFINISHED * run.unfinished}", width) if named else None
              for run in runs]
    columns = 2 if len(runs) > 1 else 1
    rows = (sum(label.count("\n") + 1 for label in labels) / columns + len(runs) % columns if named else 0)
    rows += target is not None
    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.19 * rows), dpi=100, layout="constrained")
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        if run.val_acc:
            ax_acc.plot(*zip(*run.val_acc), color=color, lw=1.8, label=label)
        if run.ensemble_acc:
            ax_acc.plot(*zip(*run.ensemble_acc), color=color, lw=1.2, ls="--",
                        label=f"{label}: ensemble" if named else None)
        if run.lr:
            ax_lr.plot(*zip(*run.lr), color=color, lw=1.2)
    if target is not None:
        ax_acc.axhline(target, color="0.5", ls=":", lw=1, label=f"target {target:g}")
    ax_acc.set(xlabel="epoch", ylabel="val/acc", title="validation accuracy")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="schedule (colours as on the left)")
    if not named:
        fig.suptitle(f"{len(runs)} runs: more than {LEGEND_RUNS}, so no legend; the table names each run", fontsize=9)
    lrs = [v for run in runs for _, v in run.lr if v > 0]
    if lrs and max(lrs) / min(lrs) > 50:
        ax_lr.set_yscale("log")
    for ax in (ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncols=columns, fontsize=7,
               frameon=False)
    return fig


def plot_runs(runs: Sequence[Run], path: str | Path, target: float | None = None) -> Path:
    """Write :func:`runs_figure` as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = runs_figure(runs, target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def compare(
    paths: Iterable[str | Path],
    target: float = 0.9,
    png: str | Path | None = "compare.png",
    *,
    metric: str = "val/acc",
    higher_is_better: bool | None = None,
    grid_png: str | Path | None = None,
    search_png: str | Path | None = None,
) -> str:
    """Read the runs under ``paths`` and return the table, plus the grid or search check when they hold one.

    Args:
        paths: run, multirun or log folders.
        target: accuracy for the "epochs to target" column.
        png: where to write the comparison figure (None: no figure).
        metric: the final scalar the grid and search checks compare (any tag the runs log).
        higher_is_better: whether a larger ``metric`` is better; None: False for a tag with
            ``loss`` in its name, True otherwise.
        grid_png: where to write the grid check's figure (None: no figure).
        search_png: where to write the search check's figure (None: no figure).

    Raises:
        FileNotFoundError: when a path holds no run.
        ValueError: for a target outside (0, 1], for an event file that holds no readable record, or when no
            run logged ``val/acc`` and no check applies.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target is an accuracy in (0, 1], got {target}")
    higher = ("loss" not in metric) if higher_is_better is None else higher_is_better
    runs = [load_run(log_dir, metrics=(metric,)) for log_dir in find_log_dirs(paths)]
    runs = [replace(run, label=label) for run, label in zip(runs, distinct_labels(runs))]
    sections = []
    table_runs = [r for r in runs if r.val_acc]
    for r in runs:
        for note in r.notes:
            print(note, file=sys.stderr)
        if not r.val_acc:
            print(f"skipped in the table: '{r.log_dir}' logged no val/acc", file=sys.stderr)
    if table_runs:
        sections.append(format_table([summarize(r, target) for r in table_runs], target))
        if png is not None:
            sections.append(f"PNG: {plot_runs(table_runs, png, target).resolve()}")
    grid = grid_check(runs, metric, higher)
    if grid is not None:
        sections.append("\n".join([format_grid_check(grid), *not_constant(runs)]))
        if grid_png is not None:
            sections.append(f"grid check PNG: {plot_grid_check(grid, grid_png).resolve()}")
    results = next((Path(p) / OPTUNA_RESULTS for p in paths if (Path(p) / OPTUNA_RESULTS).is_file()), None)
    search = search_check(runs, results, metric) if results is not None else None
    if search is not None:
        sections.append(format_search_check(search))
        if search_png is not None:
            sections.append(f"search check PNG: {plot_search_check(search, search_png).resolve()}")
    if not sections:
        raise ValueError("none of the runs logged val/acc")
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_clr.cli.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run, multirun or log folders")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy for 'epochs to target' (default 0.9)")
    parser.add_argument("--png", default="compare.png", help="where to write the figure (default compare.png)")
    parser.add_argument("--metric", default="val/acc", help="final scalar of the grid/search check (default val/acc)")
    parser.add_argument("--grid-png", default="lr_grid.png", help="grid check figure (default lr_grid.png)")
    parser.add_argument("--search-png", default="search.png", help="search check figure (default search.png)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.run_dirs, args.target, args.png, metric=args.metric, grid_png=args.grid_png,
                      search_png=args.search_png))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return 0


class CompareRuns(HydraCallback):
    """Hydra callback: when a multirun ends, print the comparison of its jobs and write the figures.

    Args:
        target: accuracy for the "epochs to target" column.
        png: file name of the comparison figure, inside the sweep folder (None: none).
        metric: the final scalar of the grid and search checks, e.g. ``val/loss`` or a tag of
            the user's own model.
        higher_is_better: whether a larger ``metric`` is better; None infers it from the name.
        grid_png: file name of the grid check's figure (written when the sweep holds one).
        search_png: file name of the search check's figure (after an Optuna sweep).

    Example::

        python -m lightning_clr.run -m +schedule=triangular2,sgdr \\
            +hydra.callbacks.compare._target_=lightning_clr.cli.compare.CompareRuns
    """

    def __init__(self, target: float = 0.9, png: str | None = "compare.png", metric: str = "val/acc",
                 higher_is_better: bool | None = None, grid_png: str | None = "lr_grid.png",
                 search_png: str | None = "search.png") -> None:
        self.target, self.png, self.metric, self.higher_is_better = float(target), png, metric, higher_is_better
        self.grid_png, self.search_png = grid_png, search_png

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if not any(sweep.rglob(EVENT_GLOB)):
            print(f"compare: no TensorBoard files under {sweep}", flush=True)
            return
        where = lambda name: None if name is None else sweep / name
        try:
            text = compare([sweep], self.target, where(self.png), metric=self.metric,
                           higher_is_better=self.higher_is_better, grid_png=where(self.grid_png),
                           search_png=where(self.search_png))
        except ValueError as err:  # the runs are done; a comparison that cannot be made is no failure
            text = f"compare: {err}"
        print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
