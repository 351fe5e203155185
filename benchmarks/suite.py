"""Task suite: range-test defaults chosen leave-one-family-out over 18 offline tasks, and checked.

    pip install -e ".[bench]" && python benchmarks/suite.py     # at most 40 minutes on 2 cores with the cache

Tasks (``suite_tasks.py``): fourteen families (model families, and regimes: fine-tuning, a
run of 88 steps, Lion's sign updates, label smoothing with heavy weight decay), seven
optimizers, batch sizes 8 to 512, each trained for its own fixed number of epochs (equal
across the rows of a task) on seeds 0 and 1. Per task and seed:

- ``oracle``: constant LRs in half-decade steps, the grid widened until its best (mean over
  seeds) is strictly inside it;
- ``lightning``: ``Tuner.lr_find`` (100 steps) and ``suggestion()`` trained as a constant LR;
- ``torch-lr-finder``: ``range_test(end_lr=10, num_iter=100)`` and its steepest-gradient
  suggestion, trained as a constant LR;
- what users pick instead of any LR search, one line each: ``schedule-free AdamW``
  (``schedulefree.AdamWScheduleFree`` at its default LR, warm-up 5% of the run) and
  ``prodigy + cosine`` (``prodigyopt.Prodigy(lr=1)``, cosine annealing over the run), both
  keeping the task's weight decay;
- ``LRRangeTest()``: the library as installed, no argument, with its sweep's length as a
  fraction of the training's optimizer steps;
- ``ours + SCHEDULE``: the defaults chosen by this study (below), then each schedule.

The anchor rows (oracle, finders, alternatives) and the recorded sweeps of the study come
from ``suite_anchors.json`` (keyed by task, seed and epochs) unless ``--refresh-anchors``;
anything the cache lacks is computed and added to it.

The defaults study (``suite_study.py``) records each task's range test once per seed with
a wide sweep and replays candidate settings on it offline; each candidate's error is the
oracle grid's regret at its ``max_lr``. The chosen defaults are then trained with every
schedule and shape, and the one with the lowest regret on the median family becomes the
default (a mean would let one family's collapsed seed decide). The default schedule is then
trained between ``base_lr`` read off the curve and ``base_lr = max_lr / r`` (``BASE_RATIOS``),
and between the bounds of the sweep at each ``min_fall`` and ``sweep_share`` (``SETTINGS``; a
sweep runs in a Trainer set up for the whole training, so a share sees the run's length).
Every choice is made leave-one-family-out: for every family, the choice made on the other
families is reported with its error on the held-out one, and the targets are checked with the
held-out choices.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import suite_study as study
import suite_tasks as st
from common import geo_mean, lightning_lr, machine, mean, setup

from lightning_clr import LRRangeTest, schedules
from lightning_clr.cli.compare import markdown
from lightning_clr.selection import select_bounds

HERE = Path(__file__).resolve().parent
ANCHORS = HERE / "suite_anchors.json"
SEEDS = (0, 1)
RECORD = (240, 80)  # steps of the two recorded sweeps, each 1e-7 .. 100
RECORD_RANGE = (1e-7, 100.0)
SCHEDULES: dict[str, tuple[str, dict]] = {
    "Constant": ("Constant", {}),
    "Triangular": ("Triangular", {}),
    "Triangular2": ("Triangular2", {}),
    "ExpRange": ("ExpRange", {}),
    "SGDR": ("SGDR", {}),
    "OneCycle": ("OneCycle", {}),
    "Cosine": ("Cosine", {}),
    "OneCycle(pct_start=0.25)": ("OneCycle", {"pct_start": 0.25}),
    # shapes: each schedule's own options, chosen the same way (the "Shapes" table)
    "Triangular(num_cycles=2)": ("Triangular", {"num_cycles": 2}),
    "SGDR(floor=0)": ("SGDR", {"floor": 0.0}),
    "SGDR(cycle_decay=1)": ("SGDR", {"cycle_decay": 1.0}),
    "SGDR(restart_warmup=0.1)": ("SGDR", {"restart_warmup": 0.1}),
    "WSD": ("WSD", {}),
    "WSD(decay=0.1)": ("WSD", {"decay": 0.1}),
    "WSD(decay=0.4)": ("WSD", {"decay": 0.4}),
    "WSD(warmup=0.1)": ("WSD", {"warmup": 0.1}),
    "WSD(warmup=0.2)": ("WSD", {"warmup": 0.2}),
}
#: base_lr candidates of the default schedule: read off the curve (None) or tied to the sweep's max_lr / r;
#: 100 and 1000 warm up from and decay to nearly zero, as WSD's paper and a cosine annealing to 0 do
BASE_RATIOS: tuple[float | None, ...] = (None, 4.0, 10.0, 25.0, 100.0, 1000.0)
#: one-setting studies of LRRangeTest: each setting's title, candidates and, for an exact tie, the value preferred
SETTINGS: dict[str, tuple[str, tuple, Callable, str]] = {
    # a sweep cutting the loss by less than min_fall reruns with twice the steps (0: never)
    "min_fall": ("Shallow-sweep reruns", (0.0, 0.05, 0.1, 0.2, 0.3), lambda v: -v,
                 "the larger value (a sweep it reruns was shallow)"),
    # the sweep takes at most this share of the run's optimizer steps (None: any length)
    "sweep_share": ("Sweep length", (None, 1.0, 0.5, 0.25), lambda v: math.inf if v is None else v,
                    "the shorter sweep"),
}
HELD_OUT_SCHEDULES = 2  # the held-out defaults train the 2 schedules best on the other families
# the cost of one training relative to the others, to start the long jobs first
COST = {"gru-lm": 5, "transformer-lm": 6, "transformer-clf": 3, "resnet-digits": 3, "conv-digits": 2, "vit-digits": 3,
        "lion-digits": 2, "finetune-walks": 2}


def schedule(name: str) -> schedules.Schedule:
    cls, kwargs = SCHEDULES[name]
    return getattr(schedules, cls)(**kwargs)


def finder_kwargs(start: float, end: float, steps: int, beta: float, threshold: float | None, rule: str,
                  rule_options: dict | None = None, settings: Sequence[tuple[str, object]] = ()) -> dict:
    """``LRRangeTest`` arguments under the names this version of the library takes; ``settings``:
    further ``(name, value)`` pairs, each passed where the library has that argument."""
    params = inspect.signature(LRRangeTest.__init__).parameters
    kw = {"num_steps": steps, "divergence_threshold": threshold, "rule": rule}
    kw.update({name: value for name, value in settings if name in params})
    if "start_lr" in params:
        # where end_lr defaults to None, 100 is a ceiling and None the end the sweep may pass, as 100 was before
        kw.update({"start_lr": start, "end_lr": None if end == 100.0 and params["end_lr"].default is None else end})
    else:
        kw.update({"min_lr": start, "max_lr": end})
    kw["ema_beta" if "ema_beta" in params else "smoothing"] = beta
    if rule_options and "rule_options" in params:
        kw["rule_options"] = dict(rule_options)
    return kw


# ----------------------------------------------------------------------------- jobs (one process each)

_ROOT: list[str] = []


def _init() -> None:
    setup()
    _ROOT.append(tempfile.mkdtemp(prefix="lightning_clr_suite_"))


def task_job(task: st.SuiteTask, job: tuple, root: str) -> object:
    """The result of a job every script over tasks runs alike, ``(kind, task name, seed, epochs, ...)``:
    ``grid`` (one more item: the constant LR), an alternative of ``suite_tasks.ALTERNATIVES``,
    ``lightning`` and ``tlf`` (the finders' suggestions held constant), and ``bare`` (``LRRangeTest()``
    as installed)."""
    kind, _, seed, epochs = job[:4]
    if kind == "grid":
        return st.fit(task, seed, epochs, root, lr=job[4])
    if kind in st.ALTERNATIVES:
        res = st.fit_alternative(task, kind, seed, epochs, root)
        return {"score": res["score"], "lr": res["lr"]}
    if kind in ("lightning", "tlf"):
        lr = lightning_lr(task, task.datamodule(), seed, epochs, root) if kind == "lightning" else st.torch_lr_finder_lr(task, seed)
        lr = None if lr is None or not math.isfinite(lr) or lr <= 0 else float(lr)
        return {"lr": lr, "score": None if lr is None else st.fit(task, seed, epochs, root, lr=lr)}
    if kind == "bare":
        finder = LRRangeTest(progress_bar=False)
        run = st.fit_run(task, seed, epochs, root, finder=finder)
        r = finder.result
        return {"score": run.score, "base_lr": r.base_lr, "max_lr": r.max_lr, "stop": r.stop_reason,
                "schedule": type(getattr(finder, "schedule", None)).__name__, "sweep_steps": run.sweep_steps,
                "training_steps": run.training_steps}
    raise ValueError(f"unknown job {job}")


def work(job: tuple) -> tuple[tuple, object]:
    """Run one job; returns it with its result."""
    if not _ROOT:
        _init()
    root = _ROOT[0]
    kind, name, seed = job[:3]
    task = st.TASKS[name]
    if kind == "record":
        steps = job[3]
        # min_fall 0 and no share: a recording has exactly its planned steps per decade, never a rerun's
        r = st.sweep(task, seed, root, **finder_kwargs(*RECORD_RANGE, steps, 0.9, 50.0, "smith",
                                                      settings=(("min_fall", 0.0), ("sweep_share", None))))
        return job, {"lrs": list(r.lrs), "raw": list(r.raw_losses), "stop": r.stop_reason}
    if kind == "sweep":  # ("sweep", task, seed, epochs, candidate, ((setting, value), ...))
        epochs, c, settings = job[3:]
        r = st.sweep(task, seed, root, epochs=epochs, **finder_kwargs(
            c.start_lr, c.end_lr, c.num_steps, c.ema_beta, c.divergence_threshold, c.rule, c.rule_options, settings))
        b = select_bounds(r.lrs, r.losses, rule=c.rule, **c.rule_options)
        return job, {"base_lr": b.base_lr, "max_lr": b.max_lr, "fallback": b.fallback, "stop": r.stop_reason,
                     "finder_max_lr": r.max_lr, "points": len(r.lrs), "reruns": getattr(r, "reruns", 0)}
    if kind == "train":
        epochs, sched, base, top = job[3:]
        finder = LRRangeTest(schedule=schedule(sched), bounds=(base, top), progress_bar=False)
        return job, st.fit(task, seed, epochs, root, finder=finder)
    return job, task_job(task, job, root)


def run_jobs(pool, jobs: Sequence[tuple], label: str, on_result=None, *, run: Callable = work,
             cost: Callable[[tuple], float] = lambda job: COST.get(job[1], 1), every: int = 20) -> dict[tuple, object]:
    """Run ``jobs`` with ``run`` (the costliest first); ``on_result(job, result)`` after each, progress on
    stderr every ``every`` jobs."""
    jobs = sorted(dict.fromkeys(jobs), key=lambda j: -cost(j))
    if not jobs:
        return {}
    t0 = time.time()
    out = {}
    for i, (job, res) in enumerate(pool.imap_unordered(run, jobs) if pool is not None else map(run, jobs)):
        out[job] = res
        if on_result is not None:
            on_result(job, res)
        if (i + 1) % every == 0 and i + 1 < len(jobs):
            print(f"[{label}: {i + 1}/{len(jobs)} in {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    print(f"[{label}: {len(jobs)} jobs in {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- anchors


#: the cached rows besides the oracle grid: the two finders and the one-line alternatives
ANCHOR_ROWS = ("lightning", "tlf", *st.ALTERNATIVES)
ALTERNATIVE_LABELS = {"schedule-free": "schedule-free AdamW", "prodigy": "prodigy + cosine"}


def key(name: str, seed: int, epochs: int, per_decade: int) -> str:
    return f"{name}|seed={seed}|epochs={epochs}" + ("" if per_decade == 2 else f"|per_decade={per_decade}")


def lr_key(lr: float) -> str:
    return f"{lr:.3g}"


def grid_lrs(low: float, high: float, per_decade: int) -> list[float]:
    n = max(1, round(math.log10(high / low) * per_decade))
    return [float(lr_key(low * (high / low) ** (i / n))) for i in range(n + 1)]


def anchors(pool, args, epochs: dict[str, int], cache: dict, extra_jobs: Sequence[tuple]) -> tuple[dict, dict]:
    """Oracle grids, finders' rows and the recorded wide sweeps per task and seed, from the cache
    or computed (and saved after every job with ``--refresh-anchors``); ``extra_jobs`` run in the
    first round. Returns (entries by key, results of the extra jobs)."""
    g = args.grid_per_decade
    entries = {}
    for name in args.tasks:
        for s in args.seeds:
            k = key(name, s, epochs[name], g)
            entries[k] = {"grid": {}} if args.refresh_anchors else json.loads(json.dumps(cache.get(k, {"grid": {}})))
            entries[k].setdefault("record", {})
    jobs = list(extra_jobs)
    for name in args.tasks:
        task, e = st.TASKS[name], epochs[name]
        for s in args.seeds:
            ent = entries[key(name, s, e, g)]
            for lr in grid_lrs(*task.grid, g):
                if lr_key(lr) not in ent["grid"]:
                    jobs.append(("grid", name, s, e, lr))
            for kind in ANCHOR_ROWS:
                if kind not in ent:
                    jobs.append((kind, name, s, e))
            for steps in args.record_steps:
                if str(steps) not in ent["record"]:
                    jobs.append(("record", name, s, steps))
    extra = {}
    e_of = {name: epochs[name] for name in args.tasks}

    def store(job, res):
        kind, name, s = job[:3]
        ent = entries.get(key(name, s, e_of[name], g))
        if kind == "grid":
            ent["grid"][lr_key(job[4])] = res
        elif kind in ANCHOR_ROWS:
            ent[kind] = res
        elif kind == "record":
            ent["record"][str(job[3])] = {"lrs": [float(f"{v:.6g}") for v in res["lrs"]],
                                          "raw": [float(f"{v:.6g}") for v in res["raw"]], "stop": res["stop"]}
        else:
            extra[job] = res
            return
        save(args.anchors, {**cache, **entries})

    for round_ in range(args.max_widen + 1):
        run_jobs(pool, jobs, f"anchors round {round_}", store)
        jobs = []
        for name in args.tasks:  # widen a grid whose best is at an edge
            e = epochs[name]
            grid = mean_grid([entries[key(name, s, e, g)]["grid"] for s in args.seeds], st.TASKS[name])
            lrs = sorted(grid)
            best = oracle_best(grid, st.TASKS[name])
            step = 10 ** (1 / g)
            if best == lrs[0]:
                new = float(lr_key(lrs[0] / step))
            elif best == lrs[-1]:
                new = float(lr_key(lrs[-1] * step))
            else:
                continue
            jobs += [("grid", name, s, e, new) for s in args.seeds]
        if not jobs:
            break
    return entries, extra


def save(path: Path, cache: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(cache.items())), indent=None, separators=(",", ":")) + "\n")
    tmp.replace(path)


def mean_grid(grids: Sequence[dict], task: st.SuiteTask) -> dict[float, float]:
    """Mean score over seeds at each LR every seed has."""
    common = set.intersection(*(set(g) for g in grids))
    return {float(k): mean([g[k] for g in grids]) for k in common}


def oracle_best(grid: dict[float, float], task: st.SuiteTask) -> float:
    return (max if task.higher_is_better else min)(grid, key=grid.get)


# ----------------------------------------------------------------------------- tables


def fmt(lr: float | None) -> str:
    return "none" if lr is None else f"{lr:.2g}"


def fmt_score(task: st.SuiteTask, v: float) -> str:
    return "diverged" if not math.isfinite(v) else f"{v:.4f}"


def better(task: st.SuiteTask, a: float, b: float) -> bool:
    """Is score ``a`` strictly better than ``b``?"""
    return a > b if task.higher_is_better else a < b


def within_target(task: st.SuiteTask, score: float, oracle: float) -> bool:
    if task.higher_is_better:
        return score >= oracle - 0.01 - 1e-12
    return math.isfinite(score) and score <= oracle * 1.05 + 1e-12


def task_arguments(description: str, tasks: dict[str, st.SuiteTask] | None = None) -> argparse.ArgumentParser:
    """The options every script over a set of tasks (default: the suite's) takes: ``--tasks``, ``--seeds``,
    ``--epochs``, ``--workers``, ``--json``."""
    names = list(st.TASKS if tasks is None else tasks)
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tasks", nargs="+", default=names, choices=names, help="tasks (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds (default 0 1)")
    p.add_argument("--epochs", type=int, default=None, help="training budget of every task (default: each task's own)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2; 1 runs in this process)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = task_arguments(__doc__.split("\n")[0])
    p.add_argument("--refresh-anchors", action="store_true", help="recompute the oracle grids and the finders' rows")
    p.add_argument("--anchors", type=Path, default=ANCHORS, help="anchor cache (default benchmarks/suite_anchors.json)")
    p.add_argument("--grid-per-decade", type=int, default=2, help="oracle grid density (default 2: half-decades)")
    p.add_argument("--max-widen", type=int, default=4, help="grid widenings per task at most (default 4)")
    p.add_argument("--record-steps", type=int, nargs="+", default=list(RECORD),
                   help="steps of the recorded wide sweeps (default 240 80)")
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES),
                   help="schedules trained with the chosen defaults (default: all)")
    p.add_argument("--small-study", action="store_true", help="a handful of candidates (smoke tests)")
    p.add_argument("--study-only", action="store_true", help="stop after the offline study (needs no new training "
                   "when the cache holds every anchor)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    setup()
    start = time.time()
    tasks = {n: st.TASKS[n] for n in args.tasks}
    epochs = {n: args.epochs or t.epochs for n, t in tasks.items()}
    seeds = list(args.seeds)
    cache = json.loads(args.anchors.read_text()) if args.anchors.exists() else {}
    pool = mp.get_context("spawn").Pool(args.workers, initializer=_init) if args.workers > 1 else None
    try:
        report = _run(args, pool, tasks, epochs, seeds, cache)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    print(f"Total: {time.time() - start:.0f} s", flush=True)
    return report


def shipped_candidate() -> study.Candidate:
    """The installed ``LRRangeTest()``'s defaults as a study candidate (its rule at the rule's own defaults)."""
    d = {k: v.default for k, v in inspect.signature(LRRangeTest.__init__).parameters.items()}
    options = tuple(sorted((d.get("rule_options") or {}).items()))
    end = 100.0 if d["end_lr"] is None else d["end_lr"]  # None: the default end, 100 (passed while the loss falls)
    return study.Candidate(d["start_lr"], end, d["num_steps"], d["ema_beta"], d["divergence_threshold"],
                           d["rule"], options)


def print_study(sty: study.Study, lofo: dict, current: study.Candidate, space: study.Space, tasks, fams) -> None:
    """The study's tables: folds, per task errors, and one setting at a time around the choice."""
    chosen = lofo["chosen"]
    print("## Defaults study (leave-one-family-out)\n")
    print(f"Candidates evaluated offline: {len(sty.reads)}; error = regret of the oracle grid at max_lr, target "
          "units (1 = 1 accuracy point or 5% loss), families weighted equally.\n")
    print(f"Chosen on all families: `{chosen.label()}`\n")
    rows = []
    for f in fams:
        fold = lofo["folds"][f]
        rows.append([f, fold["candidate"].label(), f"{fold['in_sample']:.2f}", f"{fold['held_out']:.2f}",
                     f"{sty.score(current, [f]):.2f}"])
    rows.append(["mean", "", f"{lofo['in_sample']:.2f}", f"{lofo['held_out']:.2f}", f"{sty.score(current, fams):.2f}"])
    print(markdown(["held-out family", "chosen on the other families", "in-sample error", "held-out error",
                    "shipped defaults"], rows) + "\n")
    print(f"Shipped defaults (`LRRangeTest()`, replayed): `{current.label()}`\n")
    print("Per task (chosen defaults, replayed): " + ", ".join(
        f"{n} {sty.task_error(chosen, n):.2f} (log10 max_lr/oracle {sty.log_ratio(chosen, n):+.2f})" for n in tasks)
        + "\n")
    sens = []  # one setting at a time around the chosen candidate (in-sample)
    for field_, values in (("start_lr", space.starts), ("end_lr", space.ends), ("num_steps", space.steps),
                           ("ema_beta", space.betas), ("divergence_threshold", space.thresholds)):
        cs = [study.Candidate(**{**chosen.__dict__, field_: v}) for v in values]
        sty.evaluate(cs)
        sens.append([field_, ", ".join(f"{'none' if v is None else f'{v:g}'}: {sty.score(c, fams):.2f}"
                                       for v, c in zip(values, cs))])
    rule_cs = [study.Candidate(chosen.start_lr, chosen.end_lr, chosen.num_steps, chosen.ema_beta,
                               chosen.divergence_threshold, r, o) for r, o in space.rule_options]
    sty.evaluate(rule_cs)
    sens.append(["rule {options}", ", ".join(f"{c.rule} {dict(c.options)}: {sty.score(c, fams):.2f}" for c in rule_cs)])
    print(markdown(["setting", "in-sample error with only this setting changed"], sens) + "\n", flush=True)


def others(fams: Sequence[str], held_out: str) -> list[str]:
    """The families a fold chooses on: all but the held-out one (all of them if it is the only one)."""
    return [f for f in fams if f != held_out] or list(fams)


def lofo_pick(values: Sequence, choice, error, fams: Sequence[str]) -> tuple[object, dict[str, object], float]:
    """Leave-one-family-out: the value ``choice(v, families)`` ranks first on all families, the pick
    of each fold (on the other families) and the mean ``error`` of the picks on their held-out family."""
    picks = {f: min(values, key=lambda v, f=f: choice(v, others(fams, f))) for f in fams}
    return min(values, key=lambda v: choice(v, fams)), picks, mean([error(picks[f], [f]) for f in fams])


def print_shapes(names: Sequence[str], choice, error, fams: Sequence[str]) -> dict[str, str]:
    """Each schedule's shape (its options) chosen leave-one-family-out among the trained variants.

    ``choice(name, families)`` ranks the trained rows (the median family's regret) and
    ``error(name, families)`` is their mean regret; returns, per schedule class with more than
    one variant, the variant chosen on all families.
    """
    classes: dict[str, list[str]] = {}
    for n in names:
        classes.setdefault(SCHEDULES[n][0], []).append(n)
    rows, chosen = [], {}
    for cls, variants in classes.items():
        if len(variants) < 2:
            continue
        chosen[cls], picks, held = lofo_pick(variants, choice, error, fams)
        for v in variants:
            rows.append([cls, v, f"{choice(v, fams):+.2f}", f"{error(v, fams):+.2f}", str(sum(p == v for p in picks.values())),
                         f"{held:+.2f}" if v == chosen[cls] else ""])
    if rows:
        print("## Shapes (each schedule's options, chosen leave-one-family-out among the trained variants)\n")
        print(markdown(["schedule", "variant", "median family", "mean", "chosen in folds",
                        "held-out error of the fold choices"], rows) + "\n")
        print("Shape chosen on all families: " + ", ".join(f"{c}: {v}" for c, v in chosen.items()) + "\n")
    return chosen


def setting_label(value: object) -> str:
    return "none" if value is None else f"{value:g}"


def print_setting(name: str, one: dict, default_sched: str, tasks, seeds, fams: Sequence[str]) -> dict:
    """One ``LRRangeTest`` setting chosen leave-one-family-out (``one``: its study in ``_run``); its table.

    Returns the value chosen on all families, the held-out error of the fold choices and the folds' picks.
    """
    title, tie = SETTINGS[name][0], SETTINGS[name][3]
    values, error, choice, found = one["values"], one["error"], one["choice"], one["sweeps"]
    chosen, picks, held = lofo_pick(values, choice, error, fams)
    runs = [(n, s) for n in tasks for s in seeds]
    print(f"## {title} ({name}, chosen leave-one-family-out; {default_sched} trained between each one's bounds)\n")
    print(markdown([name, "median family", "mean", "sweeps rerun", "curve points (mean)", "chosen in folds"],
                   [[setting_label(v) + (" (default)" if v == one["default"] else ""), f"{choice(v, fams)[0]:+.2f}",
                     f"{error(v, fams):+.2f}", f"{sum(found[(v, *r)]['reruns'] > 0 for r in runs)} of {len(runs)}",
                     f"{mean([found[(v, *r)]['points'] for r in runs]):.0f}",
                     str(sum(p == v for p in picks.values()))] for v in values]) + "\n")
    print(f"{name} chosen on all families: {setting_label(chosen)}; held-out error of the fold choices {held:+.2f} ("
          + ", ".join(f"{f}: {setting_label(picks[f])}" for f in fams) + f"); ties: the lower mean, then {tie}\n")
    return {"chosen": chosen, "held_out": held, "folds": picks}


def base_label(ratio: float | None) -> str:
    return "read off the curve" if ratio is None else f"max_lr / {ratio:g}"


def print_base_ratios(default_sched: str, choice, error, fams: Sequence[str]) -> tuple[float | None, float]:
    """base_lr read off the curve against base_lr tied to max_lr (``BASE_RATIOS``), chosen leave-one-family-out.

    ``choice(r, families)`` ranks a candidate (the median family's regret, then the mean) and
    ``error(r, families)`` is its mean regret. Returns the choice on all families and the
    held-out error of the fold choices.
    """
    chosen, picks, held = lofo_pick(BASE_RATIOS, choice, error, fams)
    print(f"## base_lr (read off the curve or tied to max_lr; {default_sched} between the chosen defaults' bounds, "
          "chosen leave-one-family-out)\n")
    print(markdown(["base_lr", "median family", "mean", "chosen in folds"] + list(fams),
                   [[base_label(r), f"{choice(r, fams)[0]:+.2f}", f"{error(r, fams):+.2f}",
                     str(sum(p == r for p in picks.values()))] + [f"{error(r, [f]):+.2f}" for f in fams]
                    for r in BASE_RATIOS]) + "\n")
    print(f"base_lr chosen on all families: {base_label(chosen)}; held-out error of the fold choices {held:+.2f} ("
          + ", ".join(f"{f}: {base_label(picks[f])}" for f in fams) + "); ties: the lower mean, then the curve\n")
    return chosen, held


def print_rivals(rivals: dict, family_regret, tasks: dict, fams: Sequence[str]) -> None:
    """Each way of picking the LR against the oracle (regret in target units), and how often it beats the library.

    ``rivals`` maps a row label to ``scores_of(task) -> per-seed scores``; the first row is the
    library as installed, which the others are counted against.
    """
    (lib_label, lib), rows = next(iter(rivals.items())), []
    for label, scores_of in rivals.items():
        beats = sum(better(tasks[n], mean(scores_of(n)), mean(lib(n))) for n in tasks)
        rows.append([label, f"{statistics.median([family_regret(scores_of, [f]) for f in fams]):+.2f}",
                     f"{family_regret(scores_of, fams):+.2f}", "—" if label == lib_label else f"{beats} of {len(tasks)}"]
                    + [f"{family_regret(scores_of, [f]):+.2f}" for f in fams])
    print("## Against what users pick instead (regret vs oracle in target units, negative = better)\n")
    print(markdown(["row", "median family", "mean", f"tasks it beats {lib_label} on"] + list(fams), rows) + "\n")


def _run(args, pool, tasks, epochs, seeds, cache) -> dict:
    g = args.grid_per_decade
    print(f"# Task suite\n\n{time.strftime('%Y-%m-%d')}, {machine()}; {args.workers} worker process(es); "
          f"seeds {seeds}\n", flush=True)
    print(markdown(["task", "family", "model / data", "optimizer", "batch", "epochs", "metric", "note"],
                   [[n, t.family, f"{getattr(t.net, 'func', t.net).__name__} / {getattr(t.data, 'func', t.data).__name__}",
                     t.optimizer_label, str(t.batch_size), str(epochs[n]),
                     t.metric + (" (higher is better)" if t.higher_is_better else " (lower is better)"), t.note]
                    for n, t in tasks.items()]) + "\n")

    # 1) anchors, the recorded sweeps and the bare LRRangeTest() rows, in one pool round
    extra = [] if args.study_only else [("bare", n, s, epochs[n]) for n in tasks for s in seeds]
    entries, first = anchors(pool, args, epochs, cache, extra)
    grids = {n: mean_grid([entries[key(n, s, epochs[n], g)]["grid"] for s in seeds], t) for n, t in tasks.items()}
    oracle_lr = {n: oracle_best(grids[n], t) for n, t in tasks.items()}
    oracle = {n: grids[n][oracle_lr[n]] for n in tasks}
    oracle_seeds = {n: [entries[key(n, s, epochs[n], g)]["grid"][lr_key(oracle_lr[n])] for s in seeds] for n in tasks}

    # 2) the defaults study, offline
    records = {(n, s): entries[key(n, s, epochs[n], g)]["record"] for n in tasks for s in seeds}
    curves = {n: [[study.Recording(np.array(records[(n, s)][str(k)]["lrs"]), np.array(records[(n, s)][str(k)]["raw"]))
                   for k in args.record_steps] for s in seeds] for n in tasks}
    space = study.SMALL if args.small_study else study.Space()
    families = {n: t.family for n, t in tasks.items()}
    sty = study.Study(curves, grids, {n: t.higher_is_better for n, t in tasks.items()}, families, oracle_lr, pool)
    t0 = time.time()
    lofo = sty.lofo(space)
    print(f"[study: {len(sty.reads)} candidates in {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    chosen: study.Candidate = lofo["chosen"]
    held = {f: v["candidate"] for f, v in lofo["folds"].items()}
    current = shipped_candidate()
    sty.evaluate([current])
    fams = sorted(set(families.values()))
    if args.study_only:
        print_study(sty, lofo, current, space, tasks, fams)
        return {"chosen": chosen.as_dict(), "held": {f: c.as_dict() for f, c in held.items()},
                "in_sample": lofo["in_sample"], "held_out": lofo["held_out"]}

    # 3) real sweeps with the chosen and the held-out defaults; every schedule between the chosen bounds
    fams = sorted(set(families.values()))
    need = {(c, n) for n in tasks for c in (chosen, held[families[n]])}
    sweeps = run_jobs(pool, [("sweep", n, s, epochs[n], c, ()) for c, n in need for s in seeds], "sweeps")
    bounds = {(c, n, s): sweeps[("sweep", n, s, epochs[n], c, ())] for c, n in need for s in seeds}

    def train_jobs(c, n, names):
        return [("train", n, s, epochs[n], sc, bounds[(c, n, s)]["base_lr"], bounds[(c, n, s)]["max_lr"])
                for s in seeds for sc in names]

    trains = run_jobs(pool, [j for n in tasks for j in train_jobs(chosen, n, args.schedules)], "schedules")

    def scores(c, n, sc):
        return [trains[j] for j in train_jobs(c, n, [sc])]

    # 4) which schedule wins, leave-one-family-out (on the chosen defaults' trainings)
    def family_regret(scores_of, fs):  # scores_of(task) -> its per-seed scores; the mean over families fs
        return mean([mean([mean([study.trained_regret(v, oracle[n], tasks[n].higher_is_better)
                                 for v in scores_of(n)]) for n in tasks if families[n] == f]) for f in fs])

    def sched_error(sc, fs):
        return family_regret(lambda n: scores(chosen, n, sc), fs)

    def sched_choice(sc, fs):  # the median family: one family's collapsed seed (a regret of +-7) cannot decide
        return statistics.median([sched_error(sc, [f]) for f in fs])

    default_sched = min(args.schedules, key=lambda sc: sched_choice(sc, fams))
    held_rank = {f: sorted(args.schedules, key=lambda sc, f=f: sched_choice(sc, others(fams, f)))
                 for f in fams}
    held_sched = {f: r[0] for f, r in held_rank.items()}
    # the held-out defaults, where they differ, train the schedules best on the other families
    held_names = {n: (held_rank[families[n]][:HELD_OUT_SCHEDULES] if held[families[n]] != chosen else list(args.schedules))
                  for n in tasks}
    trains.update(run_jobs(pool, [j for n in tasks if held[families[n]] != chosen
                                  for j in train_jobs(held[families[n]], n, held_names[n])], "held-out schedules"))

    # 4b) one setting at a time (the shallow-sweep threshold, the sweep's share of the run): the chosen defaults'
    # sweep at each value, the default schedule trained between its bounds (bounds equal to another's share its training)
    def one_setting(name):
        values, tie = SETTINGS[name][1:3]
        default = inspect.signature(LRRangeTest.__init__).parameters[name].default
        found = {(default, n, s): bounds[(chosen, n, s)] for n in tasks for s in seeds}
        found.update({(j[5][0][1], j[1], j[2]): r for j, r in run_jobs(pool, [
            ("sweep", n, s, epochs[n], chosen, ((name, v),)) for v in values if v != default for n in tasks
            for s in seeds], f"{name} sweeps").items()})

        def job(v, n, s):
            b = found[(v, n, s)]
            return ("train", n, s, epochs[n], default_sched, b["base_lr"], b["max_lr"])

        trains.update(run_jobs(pool, list(dict.fromkeys(j for v in values for n in tasks for s in seeds
                                                        if (j := job(v, n, s)) not in trains)), f"{name} trainings"))

        def error(v, fs):
            return family_regret(lambda n: [trains[job(v, n, s)] for s in seeds], fs)

        def choice(v, fs):  # as the schedules, the median family; an exact tie goes to the lower mean, then `tie`
            return round(statistics.median([error(v, [f]) for f in fs]), 9), round(error(v, fs), 9), tie(v)

        return {"default": default, "values": values, "sweeps": found, "error": error, "choice": choice}

    studies = {name: one_setting(name) for name in SETTINGS}

    # 4c) base_lr tied to max_lr: the default schedule between max_lr / r and max_lr of the chosen defaults' sweeps
    def base_job(r, n, s):
        b = bounds[(chosen, n, s)]
        return ("train", n, s, epochs[n], default_sched, b["base_lr"] if r is None else b["max_lr"] / r, b["max_lr"])

    trains.update(run_jobs(pool, list(dict.fromkeys(j for r in BASE_RATIOS for n in tasks for s in seeds
                                                    if (j := base_job(r, n, s)) not in trains)), "base_lr trainings"))

    def base_error(r, fs):
        return family_regret(lambda n: [trains[base_job(r, n, s)] for s in seeds], fs)

    def base_choice(r, fs):  # the median family, then the lower mean; an exact tie keeps the earlier candidate
        return round(statistics.median([base_error(r, [f]) for f in fs]), 9), round(base_error(r, fs), 9)

    # 5) per task tables and targets (targets on the held-out choices)
    summary, per_task = [], {}
    for n, t in tasks.items():
        e = epochs[n]
        ents = [entries[key(n, s, e, g)] for s in seeds]
        f = families[n]
        hc, hs = held[f], held_sched[f]
        rows = [["oracle (grid search)", fmt(oracle_lr[n]), "1", fmt_score(t, oracle[n]),
                 " / ".join(fmt_score(t, v) for v in oracle_seeds[n])]]
        finder_scores = {}
        for kind, label in (("lightning", "lightning lr_find"), ("tlf", "torch-lr-finder")):
            lrs = [x[kind]["lr"] for x in ents]
            vals = [x[kind]["score"] for x in ents if x[kind]["score"] is not None]
            finder_scores[label] = mean(vals) if len(vals) == len(seeds) else None
            rows.append([label, ", ".join(fmt(lr) for lr in lrs),
                         ", ".join("—" if lr is None else f"{lr / oracle_lr[n]:.2g}" for lr in lrs),
                         "—" if finder_scores[label] is None else fmt_score(t, finder_scores[label]),
                         " / ".join("none" if x[kind]["score"] is None else fmt_score(t, x[kind]["score"]) for x in ents)])
        alt_scores = {}
        for kind in st.ALTERNATIVES:
            label, vals = ALTERNATIVE_LABELS[kind], [x[kind]["score"] for x in ents]
            alt_scores[label] = mean(vals)
            lrs = ", ".join(fmt(x[kind]["lr"]) for x in ents)
            rows.append([label, f"d = {lrs}" if kind == "prodigy" else lrs, "—", fmt_score(t, alt_scores[label]),
                         " / ".join(fmt_score(t, v) for v in vals)])
        bare = [first[("bare", n, s, e)] for s in seeds]
        bmax = geo_mean([b["max_lr"] for b in bare])
        sweep_frac = mean([b["sweep_steps"] / b["training_steps"] for b in bare])
        rows.append([f"LRRangeTest() ({bare[0]['schedule']})", f"{fmt(geo_mean([b['base_lr'] for b in bare]))}–{fmt(bmax)}",
                     f"{bmax / oracle_lr[n]:.2g}", fmt_score(t, mean([b["score"] for b in bare])),
                     " / ".join(fmt_score(t, b["score"]) for b in bare),
                     f"{sweep_frac:.2g} ({', '.join(str(b['sweep_steps']) for b in bare)} / {bare[0]['training_steps']})"])
        variants = [(chosen, "ours")] + ([(hc, "ours, held-out defaults")] if hc != chosen else [])
        best_ours = {}
        for c, label in variants:
            bs = [bounds[(c, n, s)] for s in seeds]
            cmax, cbase = geo_mean([b["max_lr"] for b in bs]), geo_mean([b["base_lr"] for b in bs])
            names = list(args.schedules) if c == chosen else held_names[n]
            for sc in names:
                v = scores(c, n, sc)
                rows.append([f"{label} + {sc}", f"{fmt(cbase)}–{fmt(cmax)}", f"{cmax / oracle_lr[n]:.2g}",
                             fmt_score(t, mean(v)), " / ".join(fmt_score(t, x) for x in v)])
            best_ours[label] = max(names, key=lambda sc, c=c: mean(scores(c, n, sc)) * (1 if t.higher_is_better else -1))
        hlabel = variants[-1][1]
        hbs = [bounds[(hc, n, s)] for s in seeds]
        hmax = geo_mean([b["max_lr"] for b in hbs])
        top = best_ours[hlabel]
        top_score = mean(scores(hc, n, top))
        dflt = mean(scores(hc, n, hs))
        ok1 = within_target(t, top_score, oracle[n])
        beaten = {k: v is None or better(t, dflt, v) for k, v in finder_scores.items()}
        ok2 = all(beaten.values())
        ok3 = hmax >= oracle_lr[n] / 3
        ok4 = all(better(t, dflt, v) for v in alt_scores.values())
        print(f"## {n} ({t.family}; {t.optimizer_label}, batch {t.batch_size}, {e} epochs, {t.metric})\n")
        print(markdown(["row", "LR", "max_lr / oracle LR", "score", "per seed", "sweep / training steps"],
                       [r + [""] * (6 - len(r)) for r in rows]) + "\n")
        print("Oracle grid (mean): " + ", ".join(f"{fmt(lr)}: {fmt_score(t, grids[n][lr])}" for lr in sorted(grids[n]))
              + "\n")
        unit = "points" if t.higher_is_better else "%"
        gap = 100 * (top_score - oracle[n]) if t.higher_is_better else 100 * (top_score / oracle[n] - 1)
        lines = [(f"{'PASS' if ok1 else 'MISS'} best of ours (held-out defaults, {top}: {fmt_score(t, top_score)}) "
                  f"vs oracle {fmt_score(t, oracle[n])}: {gap:+.1f} {unit}"),
                 f"{'PASS' if ok2 else 'MISS'} default schedule (held-out choice {hs}: {fmt_score(t, dflt)}) beats "
                 + ", ".join(f"{k} ({'none' if v is None else fmt_score(t, v)})" for k, v in finder_scores.items()),
                 (f"{'PASS' if ok3 else 'MISS'} max_lr (held-out defaults, {fmt(hmax)}) >= oracle LR / 3 "
                  f"({fmt(oracle_lr[n] / 3)}): ratio {hmax / oracle_lr[n]:.2g}"),
                 f"{'PASS' if ok4 else 'MISS'} default schedule (held-out choice {hs}: {fmt_score(t, dflt)}) beats "
                 + ", ".join(f"{k} ({fmt_score(t, v)})" for k, v in alt_scores.items()),
                 "sweep stops: " + ", ".join(f"seed {s}: {bounds[(hc, n, s)]['stop']} after {bounds[(hc, n, s)]['points']} "
                                             f"points" + (f" (fallback: {bounds[(hc, n, s)]['fallback']})"
                                                          if bounds[(hc, n, s)]["fallback"] else "")
                                             for s in seeds)]
        for line in lines:
            print(f"- {line}")
        print()
        per_task[n] = {"oracle_lr": oracle_lr[n], "oracle": oracle[n], "max_lr": hmax, "ratio": hmax / oracle_lr[n],
                       "best": top, "best_score": top_score, "default": dflt, "finders": finder_scores,
                       "alternatives": alt_scores, "bare": mean([b["score"] for b in bare]), "sweep_fraction": sweep_frac,
                       "targets": [ok1, ok2, ok3, ok4]}
        summary.append([n, t.family, fmt(oracle_lr[n]), f"{hmax / oracle_lr[n]:.2g}",
                        f"{bmax / oracle_lr[n]:.2g}", f"{sweep_frac:.2g}", f"{gap:+.1f} {unit}"]
                       + ["PASS" if ok else "MISS" for ok in (ok1, ok2, ok3, ok4)])

    # 6) the study's report
    print_study(sty, lofo, current, space, tasks, fams)
    print("Replayed vs real sweep, chosen defaults, max_lr: " + ", ".join(
        f"{n} {geo_mean([r[1] for r in sty.reads[chosen][n] if r]):.2g}/"
        f"{geo_mean([bounds[(chosen, n, s)]['max_lr'] for s in seeds]):.2g}" for n in tasks) + "\n")

    print("## Schedules (chosen defaults' bounds; regret vs oracle in target units, negative = better)\n")
    srows = [[sc, f"{sched_choice(sc, fams):+.2f}", f"{sched_error(sc, fams):+.2f}"]
             + [f"{sched_error(sc, [f]):+.2f}" for f in fams] for sc in args.schedules]
    print(markdown(["schedule", "median family", "mean"] + fams, srows) + "\n")
    print("Schedules and shapes are chosen by the median family's regret (the mean is shown too).\n")
    held_err = mean([sched_error(held_sched[f], [f]) for f in fams])
    print(f"Default schedule chosen on all families: {default_sched} (in-sample median {sched_choice(default_sched, fams):+.2f}, "
          f"mean {sched_error(default_sched, fams):+.2f}); "
          f"held-out (mean over the held-out families): {held_err:+.2f} (" + ", ".join(f"{f}: {held_sched[f]}" for f in fams) + ")\n")

    shapes = print_shapes(args.schedules, sched_choice, sched_error, fams)

    picked = {name: print_setting(name, studies[name], default_sched, tasks, seeds, fams) for name in SETTINGS}

    base_chosen, base_held = print_base_ratios(default_sched, base_choice, base_error, fams)

    def anchor_scores(kind):  # a cached row's per-seed scores; a finder without a suggestion scores as diverged
        return lambda n: [st.score_of(tasks[n], math.nan) if (v := entries[key(n, s, epochs[n], g)][kind]["score"])
                          is None else v for s in seeds]

    rivals = {"LRRangeTest() (as installed)": lambda n: [first[("bare", n, s, epochs[n])]["score"] for s in seeds],
              "ours, held-out defaults and schedule": lambda n: scores(held[families[n]], n, held_sched[families[n]]),
              "lightning lr_find": anchor_scores("lightning"), "torch-lr-finder": anchor_scores("tlf")}
    rivals.update({ALTERNATIVE_LABELS[k]: anchor_scores(k) for k in st.ALTERNATIVES})
    print_rivals(rivals, family_regret, tasks, fams)

    print("## Summary (targets with the held-out choices)\n")
    print(markdown(["task", "family", "oracle LR", "max_lr / oracle", "LRRangeTest() max_lr / oracle",
                    "LRRangeTest() sweep / training steps", "best of ours vs oracle", "best >= oracle - tol",
                    "default beats finders", "max_lr >= oracle/3", "default beats schedule-free, prodigy"],
                   summary) + "\n")
    passes = [sum(p["targets"][i] for p in per_task.values()) for i in range(4)]
    print(f"Targets met: quality {passes[0]}/{len(tasks)}, beats finders {passes[1]}/{len(tasks)}, "
          f"max_lr {passes[2]}/{len(tasks)}, beats schedule-free and prodigy {passes[3]}/{len(tasks)}\n", flush=True)
    report = {"chosen": chosen.as_dict(), "default_schedule": default_sched, "held_schedule": held_sched, "shapes": shapes,
              **picked,
              "base_lr": {"chosen": base_label(base_chosen), "held_out": base_held},
              "held": {f: c.as_dict() for f, c in held.items()}, "in_sample": lofo["in_sample"],
              "held_out": lofo["held_out"], "tasks": per_task}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
