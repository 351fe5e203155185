"""A second, short sweep from the trained weights: does it read ``max_lr`` better than the first?

    pip install -e ".[bench]" && python benchmarks/suite.py --study-only   # fills the cache, if empty
    python benchmarks/second_sweep.py     # about 8 minutes on 2 cores

Some models tolerate a higher LR once training has lowered the curvature; others a lower one
once it has sharpened. A sweep from the initial weights sees neither. For each task of the suite
(``suite_tasks.py``), on seeds 0 and 1, the bare ``LRRangeTest()`` runs its range test and trains
its default schedule (WSD) between the found bounds; at a fraction ``--at`` of the run (0.05 is
the end of WSD's warm-up) a second sweep runs from the current weights and optimizer state, from
``max_lr / 10`` to ``max_lr * 300`` in 60 steps (exponential, no early stop), and is undone as
the first one is. The training stops there: only the curves are kept.

Each reading of the second curve is scored as the task suite's defaults study scores a reading
(``suite_study.regrets``): the regret of the oracle grid of constant LRs at that ``max_lr``, in
target units (1 = 1 accuracy point or 5% of a loss, capped at 10), the mean over seeds, then
over the tasks of a family; the oracle grids come from ``suite_anchors.json``. The reading
"first sweep" is the first sweep's own ``max_lr``, with no second sweep: what ships. The
reading is then chosen leave-one-family-out (lowest median-family regret on the other
families, ties by the mean), and its held-out regret is printed beside the first sweep's.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import suite_study as study
import suite_tasks as st
from common import machine, setup
from suite import ANCHORS, COST, key, mean_grid, oracle_best, task_arguments

from lightning_clr import LRRangeTest
from lightning_clr.cli.compare import markdown
from lightning_clr.range_test.sweep import run_sweep, sweep_lrs
from lightning_clr.selection import select_bounds

AT = (0.05, 0.1, 0.25)  # fractions of the run where the second sweep starts
SPAN = (1 / 10, 300.0)  # the second sweep's LRs, relative to the first sweep's max_lr
STEPS = 60  # points of the second sweep
GRID_PER_DECADE = 2  # the oracle grids of suite.py's cache

_ROOT: list[str] = []


class SecondSweep(LRRangeTest):
    """The bare ``LRRangeTest()``, which at ``at`` of the run records a second sweep and stops the training."""

    def __init__(self, at: float) -> None:
        super().__init__(progress_bar=False)
        self.at = at
        self.second: dict | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        total = trainer.estimated_stepping_batches
        if self.second is not None or trainer.global_step < max(1, round(self.at * total)):
            return
        assert self.result is not None
        top = self.result.max_lr
        r = run_sweep(trainer, pl_module, trainer.optimizers[0], self._group_ratios,
                      sweep_lrs(top * SPAN[0], top * SPAN[1], STEPS, "exponential"),
                      ema_beta=self._ema_beta, divergence_threshold=None, progress_bar=False)
        self.second = {"lrs": r.lrs, "smooth": r.smooth, "stop": r.stop, "step": trainer.global_step,
                       "total": int(total)}
        trainer.should_stop = True


def work(job: tuple[str, int, float]) -> tuple[tuple, dict]:
    """Record one task's second sweep at one fraction of the run."""
    if not _ROOT:
        setup()
        _ROOT.append(tempfile.mkdtemp(prefix="lightning_clr_second_sweep_"))
    name, seed, at = job
    task = st.TASKS[name]
    finder = SecondSweep(at)
    st.fit_run(task, seed, task.epochs, _ROOT[0], finder=finder)
    assert finder.result is not None and finder.second is not None
    return job, {"max_lr": finder.result.max_lr, **finder.second}


def _argmin(rec: dict) -> float:
    smooth = np.array(rec["smooth"], dtype=float)
    smooth[~np.isfinite(smooth)] = np.inf
    return float(rec["lrs"][int(np.argmin(smooth))])


def _rises(rec: dict, margin: float = 0.05) -> float:
    """The first LR whose smoothed loss lies ``margin`` (of the first point's loss) above its running minimum."""
    lrs, smooth = np.array(rec["lrs"]), np.array(rec["smooth"], dtype=float)
    finite = np.isfinite(smooth)
    if not finite.all():  # a non-finite loss has risen
        return float(lrs[int(np.argmin(finite))])
    over = np.flatnonzero(smooth > np.minimum.accumulate(smooth) + margin * abs(smooth[0]))
    return float(lrs[over[0]] if len(over) else lrs[-1])


#: the readings of the second curve; "first sweep" is the first sweep's max_lr (what ships)
READINGS: dict[str, Callable[[dict], float]] = {
    "first sweep": lambda r: r["max_lr"],
    "smith": lambda r: select_bounds(r["lrs"], r["smooth"], rule="smith").max_lr,
    "lowest loss": _argmin,
    "lowest loss / 3": lambda r: _argmin(r) / 3,
    "lowest loss / 10": lambda r: _argmin(r) / 10,
    "rise / 3": lambda r: _rises(r) / 3,
    "rise / 10": lambda r: _rises(r) / 10,
    "geometric mean of first and smith": lambda r: math.sqrt(
        r["max_lr"] * select_bounds(r["lrs"], r["smooth"], rule="smith").max_lr),
}


def main(argv: Sequence[str] | None = None) -> dict:
    p = task_arguments(__doc__.split("\n")[0])
    p.add_argument("--at", type=float, nargs="+", default=list(AT), help="fractions of the run (default 0.05 0.1 0.25)")
    args = p.parse_args(argv)
    setup()
    cache = json.loads(ANCHORS.read_text()) if ANCHORS.exists() else {}
    grids = {}
    for n in args.tasks:
        task = st.TASKS[n]
        epochs = args.epochs or task.epochs
        try:
            grids[n] = mean_grid([cache[key(n, s, epochs, GRID_PER_DECADE)]["grid"] for s in args.seeds], task)
        except KeyError:
            sys.exit(f"second_sweep.py: {ANCHORS.name} lacks the oracle grid of {n} (seeds {args.seeds}, {epochs} "
                     "epochs); run `python benchmarks/suite.py --study-only` first, with the same --tasks and --seeds")
    t0 = time.time()
    jobs = sorted(((n, s, a) for n in args.tasks for s in args.seeds for a in args.at),
                  key=lambda j: -COST.get(j[0], 1))
    records: dict[tuple, dict] = {}
    if args.workers == 1:
        records = dict(map(work, jobs))
    else:
        with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
            for done, (job, rec) in enumerate(pool.imap_unordered(work, jobs), 1):
                records[job] = rec
                print(f"[{done}/{len(jobs)}] {job}", file=sys.stderr, flush=True)

    print(f"# Second sweep from the trained weights\n\n{time.strftime('%Y-%m-%d')}, {machine()}; "
          f"{args.workers} worker process(es); seeds {args.seeds}; second sweep {SPAN[0]:g}x..{SPAN[1]:g}x the first "
          f"max_lr, {STEPS} steps\n")
    families = {n: st.TASKS[n].family for n in args.tasks}
    fams = sorted(set(families.values()))
    candidates = [("first sweep", None)] + [(r, a) for a in args.at for r in READINGS if r != "first sweep"]

    def label(c):
        return c[0] if c[1] is None else f"{c[0]} at {c[1]:g}"

    error: dict[tuple, dict[str, float]] = {}  # candidate -> task -> regret (mean over seeds)
    ratio: dict[tuple, dict[str, float]] = {}  # candidate -> task -> geometric mean of max_lr / oracle LR
    for c in candidates:
        error[c], ratio[c] = {}, {}
        for n in args.tasks:
            task, at = st.TASKS[n], c[1] if c[1] is not None else args.at[0]
            regret = study.regrets(grids[n], task.higher_is_better)
            lrs = [READINGS[c[0]](records[(n, s, at)]) for s in args.seeds]
            error[c][n] = statistics.fmean(study.interpolate(regret, lr) for lr in lrs)
            best = oracle_best(grids[n], task)
            ratio[c][n] = math.exp(statistics.fmean(math.log(lr / best) for lr in lrs))

    def family_errors(c, fs):
        return [statistics.fmean(error[c][n] for n in args.tasks if families[n] == f) for f in fs]

    def summary(c, fs):
        errs = family_errors(c, fs)
        return statistics.median(errs), statistics.fmean(errs)

    print("## Readings (regret of the oracle grid at the read max_lr; max_lr / oracle LR in brackets)\n")
    print(markdown(["reading", "median family", "mean", *args.tasks],
                   [[label(c), *(f"{v:+.2f}" for v in summary(c, fams)),
                     *(f"{error[c][n]:.2f} ({ratio[c][n]:.2g})" for n in args.tasks)] for c in candidates]) + "\n")

    if len(fams) < 2:
        print(f"(one family: no leave-one-family-out choice)\n\nTotal: {time.time() - t0:.0f} s")
        return _save(args, {}, None, records)
    folds = {}
    for f in fams:
        rest = [g for g in fams if g != f]
        pick = min(candidates, key=lambda c: summary(c, rest))
        folds[f] = (pick, family_errors(pick, [f])[0], family_errors(candidates[0], [f])[0])
    chosen = min(candidates, key=lambda c: summary(c, fams))
    print("## Leave-one-family-out\n")
    print(markdown(["held-out family", "reading chosen on the others", "its held-out regret", "first sweep's regret"],
                   [[f, label(pick), f"{held:+.2f}", f"{first:+.2f}"] for f, (pick, held, first) in folds.items()]))
    held = [v[1] for v in folds.values()]
    first = [v[2] for v in folds.values()]
    cost = statistics.fmean(STEPS / max(1, records[(n, s, args.at[0])]["total"]) for n in args.tasks for s in args.seeds)
    print(f"\nChosen on all families: {label(chosen)}. Held out: median family {statistics.median(held):+.2f}, "
          f"mean {statistics.fmean(held):+.2f}; the first sweep alone: {statistics.median(first):+.2f}, "
          f"{statistics.fmean(first):+.2f}. A second sweep costs {STEPS} steps, {cost:.2f} of the training steps "
          f"on the mean task.\n\nTotal: {time.time() - t0:.0f} s")
    return _save(args, {f: [label(v[0]), v[1], v[2]] for f, v in folds.items()}, label(chosen), records)


def _save(args, held_out: dict, chosen: str | None, records: dict[tuple, dict]) -> dict:
    """The results as one dict, also written to ``--json`` if given."""
    out = {"chosen": chosen, "held_out": held_out, "records": {f"{n}/{s}/{a}": r for (n, s, a), r in records.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
