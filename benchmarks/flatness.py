"""Flatness benchmark: do the schedules that end in broader minima generalise better?

    pip install -e ".[bench]" && python benchmarks/flatness.py     # about 4 minutes of CPU time on 1 core

Task: MNIST-1D (4000 train / 1000 test), the 1-D CNN with SGD (momentum 0.9), batch 100,
``--epochs`` (20), seeds 0, 1, 2. Per seed one range test at the library's defaults (200 steps) gives the
bounds, and the same bounds train each of six schedules at its library default: constant,
step decay, cosine, triangular2, SGDR and 1cycle. At the end of each run:

- ``FlatnessProbe`` (library defaults: the first 4 training batches, 4 filter-normalized
  directions, each used with both signs) measures the rise of the training loss at
  sigma = 0.05, 0.1 and 0.2;
- the final model is scored in eval mode on the whole training set and the test set:
  the generalisation gap is ``test loss - train loss`` (and ``train acc - test acc``).

It prints one row per run and the mean per schedule, writes a scatter plot of the rise at
``--sigma`` against the loss gap (one point per run; ``--png``, default ``flatness.png``),
and reports the Spearman rank correlation between each rise and each gap, with a permutation
p-value: over all runs, and over the runs that trained (test accuracy >= ``--min-acc``, 0.5;
chance is 0.1). A run that diverged ends at chance with a dead network, no gap and a
meaningless rise, so it says nothing about minima. The claim under test (Keskar et al. 2017; Li et al. 2018):
flatter minima, smaller gaps, so a positive correlation between rise and gap.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from common import TASKS, machine, mnist1d, range_curve, setup, trainer

from lightning_clr import FlatnessProbe, LRRangeTest, schedules
from lightning_clr.cli.compare import markdown

SEEDS = (0, 1, 2)
SCHEDULES = ("Constant", "StepDecay", "Cosine", "Triangular2", "SGDR", "OneCycle")
SIGMAS = (0.05, 0.1, 0.2)


@dataclass
class Result:
    schedule: str
    seed: int
    rises: dict[float, float]
    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float

    @property
    def gap_loss(self) -> float:
        return self.test_loss - self.train_loss

    @property
    def gap_acc(self) -> float:
        return self.train_acc - self.test_acc


@torch.no_grad()
def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on ``(x, y)``."""
    model.eval()
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float], permutations: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho (Pearson's r of the ranks) and a two-sided permutation p-value."""
    ra, rb = ranks(a), ranks(b)

    def rho(x: Sequence[float], y: Sequence[float]) -> float:
        mx, my = statistics.fmean(x), statistics.fmean(y)
        num = sum((p - mx) * (q - my) for p, q in zip(x, y))
        den = (sum((p - mx) ** 2 for p in x) * sum((q - my) ** 2 for q in y)) ** 0.5
        return num / den if den else 0.0

    observed = rho(ra, rb)
    rng = random.Random(seed)
    shuffled = list(rb)
    hits = 0
    for _ in range(permutations):
        rng.shuffle(shuffled)
        hits += abs(rho(ra, shuffled)) >= abs(observed) - 1e-12
    return observed, (hits + 1) / (permutations + 1)


def run(args: argparse.Namespace) -> list[Result]:
    dm = mnist1d(args.num_samples)
    root = tempfile.mkdtemp(prefix="lightning_clr_flatness_")
    task = TASKS["cnn-sgd"]
    x_train, y_train = dm._train.tensors
    x_test, y_test = dm._val.tensors
    results = []
    for seed in args.seeds:
        curve = range_curve(task, dm, seed, root)
        bounds = (curve.base_lr, curve.max_lr)
        for name in SCHEDULES:
            L.seed_everything(seed, verbose=False)
            model = task.model()
            probe = FlatnessProbe(sigmas=SIGMAS, every_n_epochs=args.epochs)  # once, after the last epoch
            finder = LRRangeTest(schedule=getattr(schedules, name)(), bounds=bounds, progress_bar=False)
            trainer(args.epochs, root, [finder, probe]).fit(model, datamodule=dm)
            (last,) = probe.history
            train_loss, train_acc = score(model, x_train, y_train)
            test_loss, test_acc = score(model, x_test, y_test)
            rises = {s: last[f"flatness/sigma_{s:g}"] for s in SIGMAS}
            results.append(Result(name, seed, rises, train_loss, test_loss, train_acc, test_acc))
            print(f"  {name} seed {seed}: rise@0.1 {rises[0.1]:.4f}, gap {results[-1].gap_loss:.4f}, "
                  f"test acc {test_acc:.4f}", file=sys.stderr, flush=True)
    return results


def plot(results: list[Result], sigma: float, path: str, rho: float, p: float, min_acc: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, name in enumerate(SCHEDULES):
        mine = [r for r in results if r.schedule == name and r.test_acc >= min_acc]
        if mine:
            ax.scatter([r.rises[sigma] for r in mine], [r.gap_loss for r in mine], label=name, color=f"C{i}", s=36)
        dead = [r for r in results if r.schedule == name and r.test_acc < min_acc]
        if dead:
            ax.scatter([r.rises[sigma] for r in dead], [r.gap_loss for r in dead], color=f"C{i}", marker="x", s=36,
                       label=f"{name}, did not train")
    if all(r.rises[sigma] > 0 for r in results):
        ax.set_xscale("log")
    ax.set_xlabel(f"flatness: training-loss rise at sigma = {sigma:g} (lower = flatter)")
    ax.set_ylabel("generalisation gap: test loss - train loss")
    ax.set_title(f"MNIST-1D CNN + SGD, one point per run\nruns that trained: Spearman rho = {rho:+.2f} "
                 f"(p = {p:.2g})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D train + test")
    parser.add_argument("--sigma", type=float, default=0.1, choices=SIGMAS, help="the scale on the plot's x axis")
    parser.add_argument("--png", default="flatness.png", help="where the scatter plot goes")
    parser.add_argument("--min-acc", type=float, default=0.5, help="test accuracy below which a run did not train")
    args = parser.parse_args(argv)
    setup()
    start = time.time()
    results = run(args)
    print(f"# Flatness benchmark\n\n{time.strftime('%Y-%m-%d')}, {machine()}; MNIST-1D, 1-D CNN + SGD "
          f"(momentum 0.9), {args.epochs} epochs, seeds {list(args.seeds)}, bounds from one 200-step range test "
          f"per seed, each schedule at its default shape\n")
    header = ["schedule", "seed", "test acc", "train loss", "test loss", "gap (loss)", "gap (acc)",
              *(f"rise @ {s:g}" for s in SIGMAS)]
    rows = [[r.schedule, r.seed, f"{r.test_acc:.4f}", f"{r.train_loss:.4f}", f"{r.test_loss:.4f}",
             f"{r.gap_loss:.4f}", f"{r.gap_acc:.4f}", *(f"{r.rises[s]:.4g}" for s in SIGMAS)] for r in results]
    print(markdown(header, rows) + "\n")
    means = []
    for name in SCHEDULES:
        mine = [r for r in results if r.schedule == name]
        means.append([name, len(mine), f"{statistics.fmean(r.test_acc for r in mine):.4f}",
                      f"{statistics.fmean(r.gap_loss for r in mine):.4f}", f"{statistics.fmean(r.gap_acc for r in mine):.4f}",
                      *(f"{statistics.fmean(r.rises[s] for r in mine):.4g}" for s in SIGMAS)])
    print("Mean per schedule:\n")
    print(markdown(["schedule", "runs", "test acc", "gap (loss)", "gap (acc)", *(f"rise @ {s:g}" for s in SIGMAS)],
                   means) + "\n")
    trained = [r for r in results if r.test_acc >= args.min_acc]
    failed = [f"{r.schedule} seed {r.seed} ({r.test_acc:.3f})" for r in results if r.test_acc < args.min_acc]
    correlations = {}
    for label, runs in (("all runs", results), (f"runs that trained (test acc >= {args.min_acc:g})", trained)):
        print(f"Spearman rank correlations, {label}, {len(runs)} runs (positive: flatter minimum, smaller gap):\n")
        for s in SIGMAS:
            for gap in ("gap_loss", "gap_acc"):
                rho, p = spearman([r.rises[s] for r in runs], [getattr(r, gap) for r in runs]) if len(runs) > 2 else (
                    float("nan"), float("nan"))
                correlations[(label.split(" (")[0], s, gap)] = (rho, p)
                print(f"- rise @ {s:g} vs {gap.replace('_', ' (')}): Spearman rho = {rho:+.3f}, permutation p = {p:.3f}")
        print()
    if failed:
        print(f"Did not train (left out of the second set): {', '.join(failed)}\n")
    within = []
    for name in SCHEDULES:  # the same question inside one schedule: does a flatter seed have a smaller gap?
        mine = [r for r in trained if r.schedule == name]
        if len(mine) >= 3:
            within.append(spearman([r.rises[args.sigma] for r in mine], [r.gap_loss for r in mine], permutations=0)[0])
    if within:
        print(f"Within one schedule (runs that trained, rise @ {args.sigma:g} vs gap (loss), one rho per schedule "
              f"over its seeds): mean rho {statistics.fmean(within):+.3f} over {len(within)} schedules\n")
    rho, p = correlations[("runs that trained", args.sigma, "gap_loss")]
    plot(results, args.sigma, args.png, rho, p, args.min_acc)
    print(f"\nScatter plot: {args.png}. {len(results)} trainings in {time.time() - start:.0f} s", flush=True)
    return {"results": results, "correlations": correlations}


if __name__ == "__main__":
    main(sys.argv[1:])
