"""Choose the library's defaults from measurements: range-test settings, bound rule, schedule shapes.

    pip install -e ".[bench]" && python benchmarks/tune.py      # about 25 minutes on 2 cores

Every candidate is scored by its final validation accuracy over both tasks of
``outcome.py`` (1-D CNN + SGD, MLP + AdamW on MNIST-1D) and over the tuning seeds, which
differ from the seeds whose table ``outcome.py`` publishes. The candidate with the best
mean replaces the current default only if its gain, paired by task, seed and schedule,
exceeds its standard error: a difference within seed noise changes nothing. The
range test always has one epoch's steps (40). Three stages, each fixing what the one
before chose:

1. range-test sweep (``min_lr``, ``max_lr``, ``smoothing``), with the current rule and
   schedule defaults, scored over all six schedules;
2. bound rule (``smith`` with three ``stop_frac`` values, ``valley``, ``steepest``),
   scored the same way;
3. each schedule's shape (CLR half cycle, SGDR cycle length and multiplier with cycles
   that end exactly at the budget, 1cycle ``pct_start``, ``Constant`` position), against
   the current default.

A range-test curve depends on the task, the seed and the sweep, not on the rule or the
schedule, so it is measured once per (sweep, task, seed); each candidate's bounds are read
off it, and the training after it runs with those bounds (``LRRangeTest(bounds=...)``,
which trains exactly as after the sweep: the sweep restores every state it touched).
"""

from __future__ import annotations

import argparse
import inspect
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common import TASKS, Run, machine, mean, mnist1d, range_curve, setup, steps_per_epoch, train

from lightning_clr import LRRangeTest, schedules, selection
from lightning_clr.compare import markdown
from lightning_clr.selection import select_bounds

TUNE_SEEDS = (100, 101, 102)  # outcome.py publishes seeds 0, 1, 2

SWEEPS = {  # label -> LRRangeTest settings (num_steps is one epoch)
    "1e-5..10, ema 0.9": {"min_lr": 1e-5, "max_lr": 10.0, "smoothing": 0.9},
    "1e-4..1, ema 0.9": {"min_lr": 1e-4, "max_lr": 1.0, "smoothing": 0.9},
    "1e-4..1, ema 0.5": {"min_lr": 1e-4, "max_lr": 1.0, "smoothing": 0.5},
    "1e-3..1, ema 0.9": {"min_lr": 1e-3, "max_lr": 1.0, "smoothing": 0.9},
    "1e-3..1, ema 0.5": {"min_lr": 1e-3, "max_lr": 1.0, "smoothing": 0.5},
}

RULES = {  # label -> (rule, options)
    "smith": ("smith", {"stop_frac": 0.9}),  # Smith's 90% point, the rule's first default
    "smith stop_frac=0.7": ("smith", {"stop_frac": 0.7}),
    "smith stop_frac=0.5": ("smith", {"stop_frac": 0.5}),
    "valley": ("valley", {}),
    "steepest": ("steepest", {}),  # options at their defaults
}


def shape_candidates() -> dict[str, list[schedules.Schedule]]:
    """Per schedule, the shapes to try; cycles are fitted to the run, so they end on the budget."""
    return {
        "Constant": [schedules.Constant(position=p) for p in (0.25, 0.5, 0.75)],
        **{
            name: [cls(num_cycles=n) for n in (10, 5, 2, 1)]
            for name, cls in (("Triangular", schedules.Triangular), ("Triangular2", schedules.Triangular2),
                              ("ExpRange", schedules.ExpRange))
        },
        # (cycles, multiplier): 1 cycle; 2, 4, 5 equal cycles; 2 or 3 doubling cycles, 2 tripling
        "SGDR": [schedules.SGDR(num_cycles=n, cycle_mult=m)
                 for n, m in ((1, 1), (2, 1), (4, 1), (5, 1), (2, 2), (3, 2), (2, 3))],
        "OneCycle": [schedules.OneCycle(pct_start=p) for p in (0.1, 0.2, 0.3, 0.4)],
    }


def current_sweep() -> str:
    """The label of the library's current sweep defaults (added to SWEEPS if it is new)."""
    params = inspect.signature(LRRangeTest).parameters
    sweep = {k: params[k].default for k in ("min_lr", "max_lr", "smoothing")}
    for label, settings in SWEEPS.items():
        if settings == sweep:
            return label
    label = f"{sweep['min_lr']:g}..{sweep['max_lr']:g}, ema {sweep['smoothing']:g}"
    SWEEPS[label] = sweep
    return label


def current_rule() -> str:
    """The label of the library's current rule with its current options."""
    rule = inspect.signature(LRRangeTest).parameters["rule"].default
    if rule == "smith":
        stop = inspect.signature(selection.smith).parameters["stop_frac"].default
        label = "smith" if stop == 0.9 else f"smith stop_frac={stop:g}"
        RULES.setdefault(label, ("smith", {"stop_frac": stop}))
        return label
    return rule


def current_defaults() -> dict[str, schedules.Schedule]:
    return {name: getattr(schedules, name)() for name in
            ("Constant", "Triangular", "Triangular2", "ExpRange", "SGDR", "OneCycle")}


def describe(spec: schedules.Schedule) -> str:
    """The shape parameters that stage 3 varies, e.g. ``SGDR(num_cycles=4, cycle_mult=1)``."""
    keys = {"Constant": ("position",), "SGDR": ("num_cycles", "cycle_mult"), "OneCycle": ("pct_start",)}
    names = keys.get(type(spec).__name__, ("num_cycles",))
    return f"{type(spec).__name__}(" + ", ".join(f"{k}={getattr(spec, k):.4g}" for k in names) + ")"


@dataclass
class Scores:
    """Final accuracies of one candidate, one per (task, seed, schedule) in a fixed order."""

    samples: list[tuple[str, float]]
    fallbacks: int = 0

    def task_mean(self, task: str) -> float:
        return mean([a for t, a in self.samples if t == task])

    @property
    def overall(self) -> float:
        return mean([a for _, a in self.samples])

    def gain(self, other: Scores) -> tuple[float, float]:
        """Mean paired difference ``self - other`` and its standard error."""
        diffs = [a - b for (_, a), (_, b) in zip(self.samples, other.samples, strict=True)]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else float("inf")
        return mean(diffs), spread / math.sqrt(len(diffs))


def choose(scored: dict[str, Scores], current: str) -> str:
    """The best mean, if it beats the current default by more than the standard error of the
    paired difference; otherwise the current default (a gain within seed noise is no reason
    to change it)."""
    top = max(scored, key=lambda k: scored[k].overall)
    gain, se = scored[top].gain(scored[current])
    return top if gain > se else current


class Tuner:
    """Runs and caches the range tests and trainings the three stages need."""

    def __init__(self, tasks: Sequence[str], seeds: Sequence[int], epochs: int, num_samples: int) -> None:
        self.tasks, self.seeds, self.epochs = list(tasks), list(seeds), epochs
        self.dm = mnist1d(num_samples)
        self.range_steps = max(10, steps_per_epoch(self.dm))  # LRRangeTest needs at least 10
        self.root = tempfile.mkdtemp(prefix="lightning_clr_tune_")
        self._curves: dict[tuple, object] = {}
        self._runs: dict[tuple, Run] = {}
        self.trainings = 0

    def bounds(self, sweep: str, rule: str, task: str, seed: int) -> tuple[float, float, bool]:
        key = (sweep, task, seed)
        if key not in self._curves:
            self._curves[key] = range_curve(TASKS[task], self.dm, seed, self.root,
                                            num_steps=self.range_steps, **SWEEPS[sweep])
        curve = self._curves[key]
        name, options = RULES[rule]
        b = select_bounds(curve.lrs, curve.losses, rule=name, **options)
        return b.base_lr, b.max_lr, b.fallback is not None

    def run(self, task: str, seed: int, spec: schedules.Schedule, bounds: tuple[float, float]) -> Run:
        key = (task, seed, repr(spec), bounds)
        if key not in self._runs:
            finder = LRRangeTest(schedule=spec, bounds=bounds, progress_bar=False)
            self._runs[key] = train(TASKS[task], self.dm, seed, self.epochs, self.root, finder=finder)
            self.trainings += 1
        return self._runs[key]

    def score(self, sweep: str, rule: str, specs: Sequence[schedules.Schedule]) -> Scores:
        scores = Scores([])
        for task in self.tasks:
            for seed in self.seeds:
                base, top, fell_back = self.bounds(sweep, rule, task, seed)
                scores.fallbacks += fell_back
                for spec in specs:
                    scores.samples.append((task, self.run(task, seed, spec, (base, top)).final))
        return scores

    def table(self, label: str, scored: dict[str, Scores], current: str, chosen: str,
              fallbacks: bool = True) -> str:
        header = [label, *(f"{t} final" for t in self.tasks), "mean final", "vs current (± se)"]
        header += ["fallbacks"] if fallbacks else []
        rows = []
        for name, s in scored.items():
            gain, noise = s.gain(scored[current])
            row = [f"**{name}**" if name == chosen else name, *(f"{s.task_mean(t):.4f}" for t in self.tasks),
                   f"{s.overall:.4f}", "current" if name == current else f"{gain:+.4f} ± {noise:.4f}"]
            rows.append(row + ([f"{s.fallbacks}/{len(self.tasks) * len(self.seeds)}"] if fallbacks else []))
        return markdown(header, rows)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20, help="training budget per run (default 20)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(TUNE_SEEDS), help="tuning seeds (default 100 101 102)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D samples, 80%% train (default 5000)")
    p.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=list(SWEEPS), metavar="SWEEP")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES), metavar="RULE")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the three stages, print their tables, return the choices."""
    args = parse(argv)
    setup()
    start = time.time()
    tuner = Tuner(args.tasks, args.seeds, args.epochs, args.num_samples)
    defaults = list(current_defaults().values())
    print(f"# Tuning the defaults: {args.epochs} epochs, seeds {args.seeds}, range test of "
          f"{tuner.range_steps} steps\n\n{time.strftime('%Y-%m-%d')}, {machine()}\n", flush=True)

    # 1) the sweep, with the current rule and schedule defaults
    sweep0, rule0 = current_sweep(), current_rule()
    sweeps = {s: tuner.score(s, rule0, defaults) for s in dict.fromkeys([sweep0, *args.sweeps])}
    sweep = choose(sweeps, sweep0)
    print(f"## 1. Range-test sweep (rule {rule0}, all six schedules at their current defaults)\n")
    print(tuner.table("sweep", sweeps, sweep0, sweep) + "\n", flush=True)

    # 2) the rule, with that sweep
    rules = {r: tuner.score(sweep, r, defaults) for r in dict.fromkeys([rule0, *args.rules])}
    rule = choose(rules, rule0)
    print(f"## 2. Bound rule (sweep {sweep}, all six schedules at their current defaults)\n")
    print(tuner.table("rule", rules, rule0, rule) + "\n", flush=True)

    # 3) each schedule's shape, with that sweep and rule; the current default is a candidate too
    print(f"## 3. Schedule shapes (sweep {sweep}, rule {rule})\n")
    shapes: dict[str, str] = {}
    for name, specs in shape_candidates().items():
        current = current_defaults()[name]
        labels = {describe(spec): spec for spec in [current, *specs]}
        scored = {label: tuner.score(sweep, rule, [spec]) for label, spec in labels.items()}
        shapes[name] = choose(scored, describe(current))
        print(tuner.table(name, scored, describe(current), shapes[name], fallbacks=False) + "\n", flush=True)

    print("## Chosen\n")
    print(f"- range test: {sweep}, {tuner.range_steps} steps; rule: {rule}")
    for name, shape in shapes.items():
        print(f"- {shape}")
    print(f"\n{tuner.trainings} trainings in {time.time() - start:.0f} s", flush=True)
    return {"sweep": sweep, "rule": rule, "shapes": shapes}


if __name__ == "__main__":
    main(sys.argv[1:])
