"""Compare training runs side by side from their TensorBoard files.

Usage::

    python -m lightning_clr.compare RUN_DIR [RUN_DIR ...] [--target 0.9] [--png compare.png]

Each ``RUN_DIR`` is searched for TensorBoard event files, so a Hydra run folder, a multirun
folder (one run per job) or a ``version_N`` log folder all work. For every run the table shows
its schedule (``schedule._target_`` in the run's ``.hydra/config.yaml``; ``Constant`` when the
run had none), the LR bounds (hparams ``range_test/base_lr``, ``range_test/max_lr``, or the
config's ``finder.bounds`` when the range test was skipped), the best
and final ``val/acc``, the epochs until ``val/acc`` first reached ``target``, and the best
``ensemble/val_acc`` when a :class:`~lightning_clr.SnapshotEnsemble` logged one. A PNG puts the
val-accuracy curves and the LR schedules of all runs side by side.

In a Hydra multirun, :class:`CompareRuns` (a Hydra callback) prints the same table when the
sweep ends: ``hydra.callbacks.compare._target_=lightning_clr.compare.CompareRuns``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback as HydraCallback

EVENT_GLOB = "events.out.tfevents.*"


@dataclass
class Run:
    """What one run logged, as read back from its TensorBoard files.

    Attributes:
        log_dir: the folder holding the event files.
        label: the run's Hydra overrides (or its folder name).
        schedule: the schedule's class name, or ``"?"`` when the run has no Hydra config.
        base_lr: hparam ``range_test/base_lr`` (``None`` if not logged).
        max_lr: hparam ``range_test/max_lr``.
        val_acc: ``(epoch, val/acc)`` per validation, epochs counted from 1.
        ensemble_acc: ``(epoch, ensemble/val_acc)`` per validation that logged one.
        lr: ``(step, lr)`` of the first param group, every logged step.
    """

    log_dir: Path
    label: str
    schedule: str
    base_lr: float | None
    max_lr: float | None
    val_acc: list[tuple[int, float]]
    ensemble_acc: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)


def find_log_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every folder under ``paths`` that holds a TensorBoard event file, sorted.

    Raises:
        FileNotFoundError: for a path that does not exist or holds no event file.
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"run folder '{path}' does not exist")
        dirs = {p.parent for p in path.rglob(EVENT_GLOB)} if path.is_dir() else set()
        if not dirs:
            raise FileNotFoundError(
                f"no TensorBoard event file ({EVENT_GLOB}) under '{path}'; pass the folder of a run trained "
                "with the tensorboard logger (the default)"
            )
        found |= dirs
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in path.parts]


def _hydra_dir(log_dir: Path) -> Path | None:
    for folder in (log_dir, *log_dir.parents):
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder / ".hydra"
    return None


def _read_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _bounds(log_dir: Path) -> tuple[float | None, float | None]:
    hparams = log_dir / "hparams.yaml"
    if not hparams.is_file():
        return None, None
    values = _read_yaml(hparams) or {}
    get = lambda key: float(values[key]) if values.get(key) is not None else None
    return get("range_test/base_lr"), get("range_test/max_lr")


def load_run(log_dir: str | Path) -> Run:
    """Read one run's scalars, hparams and Hydra config.

    Raises:
        ValueError: when the run logged no ``val/acc``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = Path(log_dir)
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its per-file INFO lines would flood a Hydra log
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    if "val/acc" not in tags:
        raise ValueError(f"'{log_dir}' logged no val/acc; compare needs runs with validation")
    # Lightning logs the 0-based epoch next to every metric, at the same step
    epoch_at = {e.step: int(e.value) for e in acc.Scalars("epoch")} if "epoch" in tags else {}

    def per_epoch(tag: str) -> list[tuple[int, float]]:
        if tag not in tags:
            return []
        return [(epoch_at.get(e.step, i) + 1, float(e.value)) for i, e in enumerate(acc.Scalars(tag))]

    lr_tag = "lr" if "lr" in tags else next((t for t in sorted(tags) if t.startswith("lr/")), None)
    lr = [(e.step, float(e.value)) for e in acc.Scalars(lr_tag)] if lr_tag else []

    hydra = _hydra_dir(log_dir)
    schedule, label, explicit = "?", log_dir.name, None
    if hydra is not None:
        config = _read_yaml(hydra / "config.yaml") or {}
        target = (config.get("schedule") or {}).get("_target_", "lightning_clr.schedules.Constant")
        schedule = target.rsplit(".", 1)[-1]
        overrides = _read_yaml(hydra / "overrides.yaml") if (hydra / "overrides.yaml").is_file() else []
        shown = [o for o in overrides or [] if not o.startswith(("hydra.", "+recipe=", "recipe="))]
        label = " ".join(shown) or hydra.parent.name
        explicit = (config.get("finder") or {}).get("bounds")  # a run without a sweep logs no bounds
    base, top = _bounds(log_dir)
    if base is None and explicit:
        base, top = (float(b) for b in explicit)
    return Run(log_dir, label, schedule, base, top, per_epoch("val/acc"), per_epoch("ensemble/val_acc"), lr)


def summarize(run: Run, target: float) -> dict[str, Any]:
    """One table row: best/final val accuracy, epochs to ``target``, best ensemble accuracy."""
    best_epoch, best = max(run.val_acc, key=lambda p: (p[1], -p[0]))
    reached = next((epoch for epoch, value in run.val_acc if value >= target), None)
    ensemble = max((v for _, v in run.ensemble_acc), default=None)
    return {
        "run": run.label, "schedule": run.schedule, "base_lr": run.base_lr, "max_lr": run.max_lr,
        "best": best, "best_epoch": best_epoch, "final": run.val_acc[-1][1], "epochs": run.val_acc[-1][0],
        "to_target": reached, "ensemble": ensemble,
    }


def format_table(rows: Sequence[dict[str, Any]], target: float) -> str:
    """A Markdown table of :func:`summarize` rows."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    has_ensemble = any(r["ensemble"] is not None for r in rows)
    head = ["run", "schedule", "base_lr", "max_lr", "best val/acc (epoch)", "final val/acc",
            f"epochs to {target:g}"] + (["best ensemble/val_acc"] if has_ensemble else [])
    table = []
    for r in rows:
        cells = [r["run"], r["schedule"], fmt(r["base_lr"]), fmt(r["max_lr"]),
                 f"{r['best']:.4f} ({r['best_epoch']})", f"{r['final']:.4f}",
                 str(r["to_target"]) if r["to_target"] is not None else f"not in {r['epochs']}"]
        if has_ensemble:
            cells.append("-" if r["ensemble"] is None else f"{r['ensemble']:.4f}")
        table.append(cells)
    return markdown(head, table)


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers are formatted by the caller."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_runs(runs: Sequence[Run], path: str | Path, target: float | None = None) -> Path:
    """Write a PNG: val accuracy per epoch (left) and the LR per step (right) of every run."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        ax_acc.plot(*zip(*run.val_acc), color=color, lw=1.8, label=f"{run.label} ({run.schedule})")
        if run.ensemble_acc:
            ax_acc.plot(*zip(*run.ensemble_acc), color=color, lw=1.2, ls="--", label=f"{run.label}: ensemble")
        if run.lr:
            ax_lr.plot(*zip(*run.lr), color=color, lw=1.2, label=run.label)
    if target is not None:
        ax_acc.axhline(target, color="0.5", ls=":", lw=1, label=f"target {target:g}")
    ax_acc.set(xlabel="epoch", ylabel="val/acc", title="validation accuracy")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="schedule")
    lrs = [v for run in runs for _, v in run.lr if v > 0]
    if lrs and max(lrs) / min(lrs) > 50:
        ax_lr.set_yscale("log")
    for ax in (ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def compare(paths: Iterable[str | Path], target: float = 0.9, png: str | Path | None = "compare.png") -> str:
    """Read the runs under ``paths``, write the PNG (unless ``png`` is None) and return the table.

    Raises:
        FileNotFoundError: when a path holds no run.
        ValueError: for a target outside (0, 1] or when no run logged ``val/acc``.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target is an accuracy in (0, 1], got {target}")
    runs = []
    for log_dir in find_log_dirs(paths):
        try:
            runs.append(load_run(log_dir))
        except ValueError as err:
            print(f"skipped: {err}", file=sys.stderr)
    if not runs:
        raise ValueError("none of the runs logged val/acc")
    table = format_table([summarize(r, target) for r in runs], target)
    if png is not None:
        table += f"\n\nPNG: {plot_runs(runs, png, target).resolve()}"
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_clr.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run, multirun or log folders")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy for 'epochs to target' (default 0.9)")
    parser.add_argument("--png", default="compare.png", help="where to write the figure (default compare.png)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.run_dirs, args.target, args.png))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return 0


class CompareRuns(HydraCallback):
    """Hydra callback: when a multirun ends, print the comparison of its jobs and write the PNG.

    Args:
        target: accuracy for the "epochs to target" column.
        png: file name of the figure, inside the sweep folder.

    Example::

        python -m lightning_clr.run -m +schedule=triangular2,sgdr \\
            +hydra.callbacks.compare._target_=lightning_clr.compare.CompareRuns
    """

    def __init__(self, target: float = 0.9, png: str = "compare.png") -> None:
        self.target, self.png = float(target), png

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if not any(sweep.rglob(EVENT_GLOB)):
            print(f"compare: no TensorBoard files under {sweep}", flush=True)
            return
        print("\n" + compare([sweep], self.target, sweep / self.png), flush=True)


if __name__ == "__main__":
    sys.exit(main())
