"""Snapshot-ensemble benchmark: does the ensemble beat the models it is made of?

    pip install -e ".[bench]" && python benchmarks/snapshots.py     # about 4 minutes of CPU time on 1 core

Task: MNIST-1D (4000 train / 1000 test), batch 100, ``--epochs`` (40), seeds 0, 1, 2, three
blocks: the 1-D CNN with SGD (momentum 0.9) and the MLP with AdamW, as in ``outcome.py``, and
the MLP with SGD (momentum 0.9).
Per seed, one range test at the library's defaults (200 steps; the weights are restored after it)
gives the bounds; then the configuration of
the recipe ``+recipe=snapshot_mnist1d`` trains once: SGDR with ``NUM_CYCLES`` equal cycles
(``FLOOR``: the bottom of each cycle) and a ``SnapshotEnsemble`` of the last ``NUM_SNAPSHOTS``
snapshots. Every snapshot is scored on the test set; the ensemble's accuracy is the one the
callback logs (``ensemble/val_acc``) after the last epoch. For context, the same bounds also
train one single model with 1cycle, the best schedule of ``outcome.py``, for the same budget.

``--floors --epochs 20`` instead trains the default SGDR (two cycles, the second twice as long) with each
floor candidate, ``--seeds 100 101 102`` for the choice of the default (about 20 minutes).

The target, per block: the ensemble's final accuracy beats the best single snapshot of its own
run and the run's final model (its last snapshot), by a margin beyond seed noise: every seed
gains, and the mean paired margin exceeds its standard error (the rule ``tune.py`` uses to
change a default); the lines also say whether it exceeds twice the standard error.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
import suite_tasks as st
import torch
from common import TASKS, Task, header, mnist1d, range_curve, setup, train, trainer

from lightning_clr import LRRangeTest, SnapshotEnsemble, schedules
from lightning_clr.callbacks.ensemble import snapshot_files
from lightning_clr.cli.compare import markdown
from lightning_clr.models import MLP
from lightning_clr.range_test.result import RangeTestResult

SEEDS = (0, 1, 2)
# one more pairing for this benchmark only: the MLP with outcome.py's SGD (momentum 0.9)
BLOCKS = {**TASKS, "mlp-sgd": Task("MLP, SGD (momentum 0.9)", MLP, torch.optim.SGD, {"momentum": 0.9}, nominal_lr=0.1)}
# tasks outside the suite, each with its own data and model (suite_tasks.OTHER_TASKS)
OTHER = st.OTHER_TASKS
# classification tasks of the suite (suite_tasks.py), each with its own data, model and optimizer
SUITE_BLOCKS = [n for n, t in st.TASKS.items() if t.loss == "ce"]
DEFAULT_BLOCKS = [*BLOCKS, *OTHER]
# the recipe's configuration (recipes/recipe/snapshot_mnist1d.yaml), chosen on seeds 100-102
NUM_CYCLES = 4
NUM_SNAPSHOTS = 3
FLOOR: float | None = None  # anneal each cycle to the range test's base_lr


@dataclass
class SeedResult:
    seed: int
    bounds: tuple[float, float]
    snapshots: list[float]  # test accuracy of every snapshot, in order (the last is the final model)
    ensemble: float
    one_cycle: float

    @property
    def best(self) -> float:
        return max(self.snapshots)

    @property
    def final(self) -> float:
        return self.snapshots[-1]


@torch.no_grad()
def accuracy(model: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    model.load_state_dict(state)
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


@dataclass
class Block:
    """What one block trains: a model factory, its data, the test tensors and its range test."""

    title: str
    model: Callable[[], L.LightningModule]
    dm: L.LightningDataModule
    x: torch.Tensor
    y: torch.Tensor
    range_test: Callable[[int, str], RangeTestResult]


def block(name: str, dm) -> Block:
    """An MNIST-1D block, or a task with its own data and model (``OTHER``, or one of the suite)."""
    if name in BLOCKS:
        task = BLOCKS[name]
        x, y = dm._val.tensors
        return Block(task.name, task.model, dm, x, y, lambda seed, root: range_curve(task, dm, seed, root))
    task = OTHER.get(name) or st.TASKS[name]
    data = task.datamodule()
    title = f"{name} ({'suite: ' if name in st.TASKS else ''}{task.family}, {task.optimizer_label}, batch {task.batch_size})"
    return Block(title, task.model, data, data.arrays.x_val, data.arrays.y_val,
                 lambda seed, root: st.sweep(task, seed, root))


def run_block(name: str, args: argparse.Namespace, dm, root: str) -> dict[str, object]:
    b = block(name, dm)
    x, y = b.x, b.y
    results = []
    for seed in args.seeds:
        curve = b.range_test(seed, root)
        bounds = (curve.base_lr, curve.max_lr)
        L.seed_everything(seed, verbose=False)
        model = b.model()
        spec = schedules.SGDR(num_cycles=args.cycles, cycle_mult=1.0, cycle_decay=1.0, floor=args.floor, restart_warmup=0.0)
        folder = tempfile.mkdtemp(dir=root)
        ensemble = SnapshotEnsemble(num_snapshots=args.snapshots, dirpath=folder)
        fit = trainer(args.epochs, root, [LRRangeTest(schedule=spec, bounds=bounds, progress_bar=False), ensemble])
        fit.fit(model, datamodule=b.dm)
        ensemble_acc = float(fit.callback_metrics["ensemble/val_acc"])
        states = [torch.load(f, map_location="cpu", weights_only=True) for f in snapshot_files(folder)]
        singles = [accuracy(model, s, x, y) for s in states]
        L.seed_everything(seed, verbose=False)
        reference = b.model()
        trainer(args.epochs, root, [LRRangeTest(schedule=schedules.OneCycle(), bounds=bounds,
                                                progress_bar=False)]).fit(reference, datamodule=b.dm)
        results.append(SeedResult(seed, bounds, singles, ensemble_acc, accuracy(reference, reference.state_dict(), x, y)))
        print(f"  {name} seed {seed}: snapshots {singles}, ensemble {ensemble_acc:.4f}", file=sys.stderr, flush=True)

    print(f"## {b.title}: {args.epochs} epochs, SGDR {args.cycles} cycles of {args.epochs / args.cycles:g} epochs "
          f"(floor {'base_lr' if args.floor is None else args.floor}), ensemble of the last {args.snapshots}\n")
    header = ["seed", "bounds", "snapshots (test acc)", "final model", "best snapshot", f"ensemble of {args.snapshots}",
              "vs best", "vs final", "1cycle, same budget"]
    rows = [[r.seed, f"{r.bounds[0]:.3g}–{r.bounds[1]:.3g}", " / ".join(f"{a:.3f}" for a in r.snapshots),
             f"{r.final:.4f}", f"{r.best:.4f}", f"{r.ensemble:.4f}", f"{100 * (r.ensemble - r.best):+.1f}",
             f"{100 * (r.ensemble - r.final):+.1f}", f"{r.one_cycle:.4f}"] for r in results]
    means = [statistics.fmean(getattr(r, k) for r in results) for k in ("final", "best", "ensemble", "one_cycle")]
    rows.append(["mean", "", "", *(f"{m:.4f}" for m in means[:3]),
                 f"{100 * (means[2] - means[1]):+.1f}", f"{100 * (means[2] - means[0]):+.1f}", f"{means[3]:.4f}"])
    print(markdown(header, rows) + "\n")
    checks = {}
    for label, key in (("best single snapshot", "best"), ("final model", "final"), ("1cycle single model", "one_cycle")):
        margins = [r.ensemble - getattr(r, key) for r in results]
        mean, err = spread(margins)
        passed = mean > err and all(m > 0 for m in margins)
        checks[key] = passed
        print(f"- {'PASS' if passed else 'MISS'} ensemble vs {label}: {100 * mean:+.2f} ± {100 * err:.2f} points "
              f"(mean ± standard error of the paired margin, {'above' if mean > 2 * err else 'not above'} twice it; "
              f"per seed {' / '.join(f'{100 * m:+.1f}' for m in margins)})"
              + (" (context, not a target)" if key == "one_cycle" else ""))
    finals = [r.final for r in results]
    print(f"- seed noise: the final model's test accuracy varies by {100 * statistics.stdev(finals):.2f} points (std) "
          f"across seeds\n" if len(finals) > 1 else "")
    return {"results": results, "checks": checks}


FLOOR_CANDIDATES = {  # label -> SGDR settings, all else at the library default (2 cycles, the second twice as long)
    "floor base_lr, cycle_decay 1 (old default)": {"floor": None, "cycle_decay": 1.0},
    "floor 0.1": {"floor": 0.1, "cycle_decay": 1.0},
    "floor 0.01": {"floor": 0.01, "cycle_decay": 1.0},
    "floor 0 (published)": {"floor": 0.0, "cycle_decay": 1.0},
    "floor base_lr, restart_warmup 0.05": {"floor": None, "cycle_decay": 1.0, "restart_warmup": 0.05},
    "floor base_lr, cycle_decay 0.5 (new default)": {"floor": None, "cycle_decay": 0.5},
}


def floor_table(args: argparse.Namespace, dm, root: str) -> None:
    """Final test accuracy of the default SGDR with each floor candidate (``--floors``), per task and seed."""
    for name in args.tasks:
        task = BLOCKS[name]
        finals: dict[str, list[float]] = {label: [] for label in FLOOR_CANDIDATES}
        for seed in args.seeds:
            curve = range_curve(task, dm, seed, root)
            for label, settings in FLOOR_CANDIDATES.items():
                run = train(task, dm, seed, args.epochs, root, finder=LRRangeTest(
                    schedule=schedules.SGDR(**settings), bounds=(curve.base_lr, curve.max_lr), progress_bar=False))
                finals[label].append(run.final)
        print(f"## SGDR floor, {task.name}: {args.epochs} epochs, seeds {list(args.seeds)}\n")
        rows = [[label, f"{statistics.fmean(v):.4f}", " / ".join(f"{a:.3f}" for a in v)] for label, v in finals.items()]
        print(markdown(["SGDR", "final acc", "per seed"], rows) + "\n", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_BLOCKS, choices=DEFAULT_BLOCKS + SUITE_BLOCKS,
                        help="MNIST-1D blocks and cnn-walks (the default: all four), or classification tasks of "
                             "benchmarks/suite.py")
    parser.add_argument("--cycles", type=int, default=NUM_CYCLES, help="SGDR cycles (and snapshots) in the run")
    parser.add_argument("--snapshots", type=int, default=NUM_SNAPSHOTS, help="m: the ensemble of the last m snapshots")
    parser.add_argument("--floor", type=lambda v: None if v == "base_lr" else float(v), default=FLOOR,
                        help="SGDR floor as a fraction of max_lr, or base_lr (the recipe's)")
    parser.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D train + test")
    parser.add_argument("--floors", action="store_true",
                        help="instead: the default SGDR with each floor candidate (how the floor default was chosen)")
    args = parser.parse_args(argv)
    if args.floors and not set(args.tasks) <= set(BLOCKS):
        parser.error(f"--floors trains the MNIST-1D blocks only ({', '.join(BLOCKS)}), not {args.tasks}")
    setup()
    start = time.time()
    dm = mnist1d(args.num_samples)
    root = tempfile.mkdtemp(prefix="lightning_clr_snapshots_")
    print(header("Snapshot-ensemble benchmark", dm), flush=True)
    if args.floors:
        floor_table(args, dm, root)
        print(f"{len(args.tasks) * len(args.seeds) * len(FLOOR_CANDIDATES)} trainings in {time.time() - start:.0f} s")
        return {}
    results = {name: run_block(name, args, dm, root) for name in args.tasks}
    print(f"{len(args.tasks) * len(args.seeds) * 2} trainings in {time.time() - start:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
