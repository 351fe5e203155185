"""The defaults study of ``suite.py``: range-test settings scored offline, chosen leave-one-family-out.

Each task's range-test curve is recorded once per seed with a wide sweep (1e-7 to 100),
twice: densely (240 steps, 27 per decade) and sparsely (80 steps, 9 per decade); the
divergence stop is generous (50x) and the raw losses are kept. A candidate setting is then
replayed on those curves without training:

1. its sweep ``start_lr .. end_lr`` with ``num_steps`` points is sampled, point by point,
   from the recording whose steps per decade are closest to its own (the loss at an LR
   depends on how many steps the sweep took to get there), nearest in log LR; a point
   beyond the recording's end did not exist (the recording diverged there);
2. the raw losses are smoothed again with the candidate's ``ema_beta`` (bias-corrected,
   as the sweep does) and cut after the first point above ``divergence_threshold`` x the
   best smoothed loss so far (the sweep keeps that point and stops);
3. ``select_bounds(lrs, smoothed, rule, **options)`` reads the bounds.

A candidate's error on a task is the regret of training at a constant ``max_lr``, read
off the oracle grid (mean over seeds, linear in log10 LR between grid points), in target
units: accuracy points for ``val/acc`` tasks, percent of the oracle's loss / 5 for loss
tasks, so that 1.0 is the issue's tolerance (1 point, 5%); capped at 10 (a diverged run).
Families weigh equally: a task's error is averaged over its seeds, a family's over its
tasks, and a score over families.

The search is two-staged, the same way inside every fold: (A) sweep range and length,
EMA beta and divergence threshold, for each rule at its own default options; (B) with that
sweep fixed, the rule, its options and kernel width, EMA beta and divergence threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lightning_clr.selection import select_bounds

CAP = 10.0  # regret cap in target units (a diverged or useless run)


@dataclass(frozen=True)
class Candidate:
    """One setting of the range test's defaults (rule options as sorted ``(name, value)`` pairs)."""

    start_lr: float
    end_lr: float
    num_steps: int
    ema_beta: float
    divergence_threshold: float | None
    rule: str
    options: tuple[tuple[str, float], ...] = ()

    @property
    def rule_options(self) -> dict[str, float]:
        return dict(self.options)

    @property
    def sweep(self) -> tuple[float, float, int]:
        return self.start_lr, self.end_lr, self.num_steps

    def label(self) -> str:
        opts = ", ".join(f"{k}={v:g}" for k, v in self.options)
        thr = "none" if self.divergence_threshold is None else f"{self.divergence_threshold:g}"
        return (f"sweep {self.start_lr:g}..{self.end_lr:g} x{self.num_steps}, ema_beta={self.ema_beta:g}, "
                f"divergence_threshold={thr}, rule={self.rule}" + (f" {{{opts}}}" if opts else ""))

    def as_dict(self) -> dict:
        return {"start_lr": self.start_lr, "end_lr": self.end_lr, "num_steps": self.num_steps,
                "ema_beta": self.ema_beta, "divergence_threshold": self.divergence_threshold, "rule": self.rule,
                "rule_options": self.rule_options}


@dataclass(frozen=True)
class Space:
    """The candidate values of each setting."""

    starts: tuple[float, ...] = (1e-7, 1e-6, 1e-5)
    ends: tuple[float, ...] = (1.0, 10.0, 100.0)
    steps: tuple[int, ...] = (50, 100, 200)
    betas: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98)
    thresholds: tuple[float | None, ...] = (3.0, 5.0, 10.0, None)
    rule_options: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = tuple(
        [("smith", (("kernel_width", s), ("stop_frac", f))) for f in (0.5, 0.75, 0.9) for s in (0.05, 0.1, 0.2)]
        + [("valley", (("position", p), ("kernel_width", s))) for p in (0.5, 0.67, 0.85) for s in (0.05, 0.1, 0.2)]
        + [("steepest", (("kernel_width", s), ("stop_frac", f))) for f in (0.5, 0.9) for s in (0.05, 0.1, 0.2)])
    default_rules: tuple[str, ...] = ("smith", "valley", "steepest")

    def stage_a(self) -> list[Candidate]:
        return [Candidate(a, b, n, beta, thr, rule)
                for n, a, b, beta, thr, rule in itertools.product(self.steps, self.starts, self.ends, self.betas,
                                                                  self.thresholds, self.default_rules)]

    def stage_b(self, sweep: tuple[float, float, int]) -> list[Candidate]:
        return [Candidate(*sweep, beta, thr, rule, opts)
                for (rule, opts), beta, thr in itertools.product(self.rule_options, self.betas, self.thresholds)]


SMALL = Space(starts=(1e-6,), ends=(10.0,), steps=(50,), betas=(0.9,), thresholds=(5.0,),
              rule_options=(("valley", (("position", 0.67),)),), default_rules=("smith", "valley"))


@dataclass
class Recording:
    """A recorded sweep: LRs and raw losses (finite prefix)."""

    lrs: np.ndarray
    raw: np.ndarray

    @property
    def per_decade(self) -> float:
        return (len(self.lrs) - 1) / max(1e-9, math.log10(self.lrs[-1] / self.lrs[0]))


def replay(recordings: Sequence[Recording], cand: Candidate) -> tuple[np.ndarray, np.ndarray] | None:
    """The candidate's curve (LRs, smoothed losses), or None if it has no point."""
    decades = math.log10(cand.end_lr / cand.start_lr)
    density = (cand.num_steps - 1) / decades
    rec = min(recordings, key=lambda r: abs(math.log(r.per_decade / density)))
    targets = np.geomspace(cand.start_lr, cand.end_lr, cand.num_steps)
    log_rec = np.log10(rec.lrs)
    step = (log_rec[-1] - log_rec[0]) / max(1, len(log_rec) - 1)
    inside = np.log10(targets) <= log_rec[-1] + 0.5 * step  # beyond the recording's end it had stopped
    targets = targets[inside]
    if targets.size == 0:
        return None
    idx = np.clip(np.rint((np.log10(targets) - log_rec[0]) / step).astype(int), 0, len(log_rec) - 1)
    raw = rec.raw[idx]
    smooth = np.empty_like(raw)
    avg, best, keep = 0.0, math.inf, len(raw)
    beta, thr = cand.ema_beta, cand.divergence_threshold
    for k, value in enumerate(raw):
        avg = beta * avg + (1 - beta) * value
        smooth[k] = avg / (1 - beta ** (k + 1))
        best = min(best, smooth[k])
        if thr is not None and k > 0 and smooth[k] > thr * best:
            keep = k + 1
            break
    return targets[:keep], smooth[:keep]


def read(recordings: Sequence[Recording], cand: Candidate) -> tuple[float, float, str | None] | None:
    """``(base_lr, max_lr, fallback)`` the candidate would choose, or None without a curve."""
    curve = replay(recordings, cand)
    if curve is None:
        return None
    try:
        b = select_bounds(curve[0], curve[1], rule=cand.rule, **cand.rule_options)
    except ValueError:
        return None
    return b.base_lr, b.max_lr, b.fallback


def read_all(args: tuple[list[list[Recording]], list[Candidate]]) -> list[list]:
    """Reads of many candidates on many curves (one task-seed per list of recordings)."""
    curves, cands = args
    return [[read(r, c) for r in curves] for c in cands]


# ----------------------------------------------------------------------------- scoring


def regrets(grid: dict[float, float], higher_is_better: bool) -> dict[float, float]:
    """Each grid LR's regret against the grid's best, in target units, capped."""
    best = max(grid.values()) if higher_is_better else min(grid.values())
    out = {}
    for lr, s in grid.items():
        if higher_is_better:
            r = 100 * (best - s) / 1.0
        else:
            r = CAP if not math.isfinite(s) else 100 * (s / best - 1) / 5.0
        out[lr] = min(CAP, max(0.0, r))
    return out


def interpolate(table: dict[float, float], lr: float) -> float:
    """Linear in log10 LR between grid points; the edge value outside the grid."""
    xs = np.log10(sorted(table))
    ys = np.array([table[k] for k in sorted(table)])
    return float(np.interp(math.log10(lr), xs, ys))


def trained_regret(score: float, oracle: float, higher_is_better: bool) -> float:
    """A trained run's regret against the oracle in target units (negative: better), capped."""
    if higher_is_better:
        r = 100 * (oracle - score)
    else:
        r = CAP if not math.isfinite(score) else 100 * (score / oracle - 1) / 5.0
    return min(CAP, r)


class Study:
    """Candidate errors per task (mean over seeds), memoised, and the leave-one-family-out choice.

    Args:
        curves: ``{task: [recordings of seed 0, recordings of seed 1, ...]}``.
        grids: ``{task: {lr: mean score over seeds}}``.
        higher: ``{task: higher_is_better}``; ``families``: ``{task: family}``.
        oracle_lr: ``{task: best grid LR}``.
        pool: an optional process pool for the reads.
    """

    def __init__(self, curves, grids, higher, families, oracle_lr, pool=None) -> None:
        self.tasks = sorted(curves)
        self.curves, self.families, self.oracle_lr = curves, families, oracle_lr
        self.regret_tables = {t: regrets(grids[t], higher[t]) for t in self.tasks}
        self.pool = pool
        self.reads: dict[Candidate, dict[str, list]] = {}

    def evaluate(self, cands: Iterable[Candidate]) -> None:
        todo = [c for c in dict.fromkeys(cands) if c not in self.reads]
        if not todo:
            return
        flat = [(t, i) for t in self.tasks for i in range(len(self.curves[t]))]
        curves = [self.curves[t][i] for t, i in flat]
        chunks = [todo[i::8] for i in range(8)]
        jobs = [(curves, chunk) for chunk in chunks if chunk]
        results = (self.pool.map(read_all, jobs) if self.pool is not None else map(read_all, jobs))
        for chunk, res in zip([c for c in chunks if c], results):
            for cand, per_curve in zip(chunk, res):
                by_task: dict[str, list] = {t: [] for t in self.tasks}
                for (t, _), r in zip(flat, per_curve):
                    by_task[t].append(r)
                self.reads[cand] = by_task

    def task_error(self, cand: Candidate, task: str) -> float:
        errs = [CAP if r is None else interpolate(self.regret_tables[task], r[1]) for r in self.reads[cand][task]]
        return float(np.mean(errs))

    def log_ratio(self, cand: Candidate, task: str) -> float:
        """Mean over seeds of log10(max_lr / oracle LR)."""
        return float(np.mean([math.nan if r is None else math.log10(r[1] / self.oracle_lr[task])
                              for r in self.reads[cand][task]]))

    def score(self, cand: Candidate, families: Iterable[str]) -> float:
        fams = list(families)
        return float(np.mean([np.mean([self.task_error(cand, t) for t in self.tasks if self.families[t] == f])
                              for f in fams]))

    def best(self, cands: Sequence[Candidate], families: Iterable[str]) -> Candidate:
        fams = list(families)
        self.evaluate(cands)
        # ties go to the earlier candidate (fewer sweep steps first)
        return min(cands, key=lambda c: round(self.score(c, fams), 9))

    def choose(self, space: Space, families: Iterable[str]) -> Candidate:
        """Stage A then stage B on ``families``."""
        fams = list(families)
        a = self.best(space.stage_a(), fams)
        return self.best(space.stage_b(a.sweep) + [a], fams)

    def lofo(self, space: Space) -> dict:
        """The in-sample choice and, per held-out family, the choice on the others and its error."""
        fams = sorted({self.families[t] for t in self.tasks})
        chosen = self.choose(space, fams)
        folds = {}
        for f in fams:
            others = [g for g in fams if g != f] or fams
            pick = self.choose(space, others)
            folds[f] = {"candidate": pick, "held_out": self.score(pick, [f]), "in_sample": self.score(chosen, [f])}
        return {"chosen": chosen, "in_sample": self.score(chosen, fams),
                "held_out": float(np.mean([v["held_out"] for v in folds.values()])), "folds": folds}
