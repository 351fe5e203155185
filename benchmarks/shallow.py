"""Shallow sweeps: the range test with and without its reruns, side by side in one run.

    pip install -e ".[bench]" && python benchmarks/shallow.py     # about 2 minutes on 1 core

A sweep that cuts the loss by less than ``min_fall`` (10%) of its top is run again with
twice the steps, at most ``max_reruns`` (2) times. Per task and seed this script runs the
range test twice from the same seed, with ``min_fall=0`` (no rerun: the sweep as it was
before) and at the defaults, prints each one's fall, reruns and bounds, and trains the
task's default schedule (``Triangular()``) between each pair of bounds for the task's epochs.

Default task: ``cnn-walks`` (``suite_tasks.OTHER_TASKS``: the library's 1-D CNN with SGD on
MNIST-1D's transformations of random-walk templates; its loss plateaus at the start).
``--tasks`` also takes the suite's tasks: there no curve falls by less than 10% but a flat one,
so both columns should agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import suite_tasks as st
from common import machine, setup

from lightning_clr import LRRangeTest
from lightning_clr.cli.compare import markdown
from lightning_clr.selection import prepare

TASKS = {**st.OTHER_TASKS, **st.TASKS}


def relative_fall(result) -> float:
    curve = prepare(result.lrs, result.losses)
    return curve.fall / abs(curve.top)


def run_task(name: str, seeds: Sequence[int], root: str, epochs: int | None = None) -> list[float]:
    task = TASKS[name]
    epochs = epochs or task.epochs
    rows, margins = [], []
    for seed in seeds:
        before, after = st.sweep(task, seed, root, min_fall=0.0), st.sweep(task, seed, root)
        scores = [st.fit(task, seed, epochs, root, finder=LRRangeTest(bounds=(r.base_lr, r.max_lr),
                                                                           progress_bar=False))
                  for r in (before, after)]
        margins.append(scores[1] - scores[0] if task.higher_is_better else scores[0] - scores[1])
        rows.append([seed, f"{relative_fall(before):.1%}", f"{before.base_lr:.3g}–{before.max_lr:.3g}",
                     f"{scores[0]:.4g}", after.reruns, f"{len(after.lrs)}", f"{relative_fall(after):.1%}",
                     f"{after.base_lr:.3g}–{after.max_lr:.3g}", f"{scores[1]:.4g}"])
        print(f"  {name} seed {seed}: {scores}", file=sys.stderr, flush=True)
    print(f"## {name} ({task.family}, {task.optimizer_label}, batch {task.batch_size}, {epochs} epochs of "
          f"Triangular, {task.metric})\n")
    print(markdown(["seed", "fall, 200 steps", "bounds, no rerun", task.metric, "reruns", "points", "fall",
                    "bounds, defaults", task.metric], rows) + "\n")
    unit = "points" if task.metric == "val/acc" else "loss"
    scale = 100 if task.metric == "val/acc" else 1
    mean = statistics.fmean(margins)
    print(f"- defaults against no rerun: {scale * mean:+.2f} {unit} (mean over seeds; per seed "
          f"{' / '.join(f'{scale * m:+.2f}' for m in margins)}; positive: better with the reruns)\n", flush=True)
    return margins


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(st.OTHER_TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's)")
    args = parser.parse_args(argv)
    setup()
    start = time.time()
    root = tempfile.mkdtemp(prefix="lightning_clr_shallow_")
    print(f"# Shallow sweeps: the range test with and without its reruns\n\n{time.strftime('%Y-%m-%d')}, "
          f"{machine()}\n", flush=True)
    margins = {name: run_task(name, args.seeds, root, args.epochs) for name in args.tasks}
    print(f"{2 * len(args.tasks) * len(args.seeds)} range tests and trainings in {time.time() - start:.0f} s")
    return margins


if __name__ == "__main__":
    main(sys.argv[1:])
