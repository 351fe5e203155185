"""Held-out tasks: the bare ``LRRangeTest()`` against what users pick instead, on tasks no default was chosen on.

    pip install -e ".[bench]" && python benchmarks/held_out.py     # about 10 minutes on 2 cores, 1 with the cache

``suite.py`` chose every default of the library on the tasks of ``suite_tasks.TASKS``. The six
tasks of ``held_out_tasks.py`` were never used to choose anything; each has a model family or
an optimizer that the suite lacks. Per task, on seeds 0 and 1, every row trains the task's
network and loss for the task's number of epochs:

- ``oracle (grid search)``: constant LRs in half-decade steps, the grid widened until its best
  (mean over seeds) is strictly inside it (``suite.py``'s grid);
- ``torch-lr-finder``: ``range_test(end_lr=10, num_iter=100)`` and its steepest-gradient
  suggestion, trained as a constant LR;
- ``schedule-free AdamW`` (``schedulefree.AdamWScheduleFree`` at its default LR, warm-up 5% of
  the run) and ``prodigy + cosine`` (``prodigyopt.Prodigy(lr=1)``, cosine annealing over the
  run), both keeping the task's weight decay;
- ``LRRangeTest()``: the library as installed, no argument; its ``max_lr`` against the oracle's
  LR and its sweep's length against the training's optimizer steps.

Regret is in the suite's target units (``suite_study.trained_regret``): 1 is one accuracy point
or 5% of a loss worse than the oracle, capped at 10; negative is better than the oracle; a
row's regret is the mean over seeds. ``LRRangeTest()`` matches or beats a row when its mean
score is within the suite's tolerance of that row's (``suite.within_target``: 1 point or 5%)
or better.

The oracle grids and the other rows come from ``held_out_cache.json`` (keyed by task, seed
and epochs) unless ``--refresh``; anything the cache lacks is computed and added to it. The
``LRRangeTest()`` row is trained on every run: it is what the library does now.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import suite
import suite_study as study
import suite_tasks as st
from common import geo_mean, machine, mean, setup
from held_out_tasks import HELD_OUT_TASKS as TASKS
from suite import (
    ALTERNATIVE_LABELS,
    better,
    fmt,
    fmt_score,
    grid_lrs,
    key,
    lr_key,
    mean_grid,
    oracle_best,
    save,
    task_arguments,
    task_job,
    within_target,
)

from lightning_clr.cli.compare import markdown

HERE = Path(__file__).resolve().parent
CACHE = HERE / "held_out_cache.json"
GRID_PER_DECADE = 2  # half-decades, as the suite's oracle
MAX_WIDEN = 4  # grid widenings per task at most
#: the cached rows besides the oracle grid
ANCHOR_ROWS = ("tlf", *st.ALTERNATIVES)
LABELS = {"tlf": "torch-lr-finder", **ALTERNATIVE_LABELS}
NAMES = {"tlf": "torch-lr-finder", "schedule-free": "Schedule-Free AdamW", "prodigy": "Prodigy"}  # in the counts
BARE = "LRRangeTest()"
ORACLE = "oracle (grid search)"
# the cost of one training relative to the others, to start the long jobs first
COST = {"mixer-digits": 3, "bigbatch-mnist1d": 3, "convae-digits": 2}

# ----------------------------------------------------------------------------- jobs (one process each)

_ROOT: list[str] = []


def _init() -> None:
    setup()
    _ROOT.append(tempfile.mkdtemp(prefix="lightning_clr_held_out_"))


def work(job: tuple) -> tuple[tuple, object]:
    """Run one job, ``(kind, task, seed, epochs, ...)``; returns it with its result."""
    if not _ROOT:
        _init()
    return job, task_job(TASKS[job[1]], job, _ROOT[0])


def run_jobs(pool, jobs: Sequence[tuple], label: str, on_result=None) -> dict[tuple, object]:
    """``suite.run_jobs`` over this script's tasks: the costliest first, ``LRRangeTest()`` rows before the others."""
    return suite.run_jobs(pool, jobs, label, on_result, run=work, every=10,
                          cost=lambda j: COST.get(j[1], 1) + (j[0] == "bare"))


# ----------------------------------------------------------------------------- the cached rows


def anchors(pool, args, epochs: dict[str, int], cache: dict, extra_jobs: Sequence[tuple]) -> tuple[dict, dict, int]:
    """Oracle grids and the other rows per task and seed, from the cache or computed (the cache is
    saved after every job); ``extra_jobs`` run in the first round. Returns (entries by key,
    results of the extra jobs, number of cached jobs computed)."""
    entries, keys = {}, {}
    for name in args.tasks:
        for s in args.seeds:
            keys[(name, s)] = k = key(name, s, epochs[name], GRID_PER_DECADE)
            entries[k] = {"grid": {}} if args.refresh else json.loads(json.dumps(cache.get(k, {"grid": {}})))
    jobs = list(extra_jobs)
    for name in args.tasks:
        for s in args.seeds:
            ent = entries[keys[(name, s)]]
            jobs += [("grid", name, s, epochs[name], lr) for lr in grid_lrs(*TASKS[name].grid, GRID_PER_DECADE)
                     if lr_key(lr) not in ent["grid"]]
            jobs += [(kind, name, s, epochs[name]) for kind in ANCHOR_ROWS if kind not in ent]
    extra, computed = {}, [0]

    def store(job, res):
        kind, name, s = job[:3]
        ent = entries[keys[(name, s)]]
        if kind == "grid":
            ent["grid"][lr_key(job[4])] = res
        elif kind in ANCHOR_ROWS:
            ent[kind] = res
        else:
            extra[job] = res
            return
        computed[0] += 1
        save(args.cache, {**cache, **entries})

    for round_ in range(MAX_WIDEN + 1):
        run_jobs(pool, jobs, "round 0 (grids, anchors, LRRangeTest())" if round_ == 0 else f"widening {round_}", store)
        jobs = []
        for name in args.tasks:  # widen a grid whose best is at an edge
            grid = mean_grid([entries[keys[(name, s)]]["grid"] for s in args.seeds], TASKS[name])
            lrs, best = sorted(grid), oracle_best(grid, TASKS[name])
            step = 10 ** (1 / GRID_PER_DECADE)
            if best not in (lrs[0], lrs[-1]):
                continue
            new = float(lr_key(lrs[0] / step if best == lrs[0] else lrs[-1] * step))
            jobs += [("grid", name, s, epochs[name], new) for s in args.seeds]
        if not jobs:
            break
    return entries, extra, computed[0]


# ----------------------------------------------------------------------------- tables


def regret(task: st.SuiteTask, scores: Sequence[float], oracle: float) -> float:
    """The mean over seeds of each seed's regret against the oracle's mean score, in target units."""
    return mean([study.trained_regret(v, oracle, task.higher_is_better) for v in scores])


def signed(value: float) -> str:
    """A regret with its sign; a rounding error's -0.00 shows as +0.00."""
    return f"{0.0 if abs(value) < 0.005 else value:+.2f}"


def verdict(task: st.SuiteTask, ours: float, theirs: float) -> str:
    """``beats`` (better), ``matches`` (within the suite's tolerance) or ``loses``."""
    if better(task, ours, theirs):
        return "beats"
    return "matches" if within_target(task, ours, theirs) else "loses"


def task_block(name: str, epochs: int, seeds: Sequence[int], ents: list[dict], bare: list[dict]) -> dict:
    """Print one task's table; returns its numbers."""
    t = TASKS[name]
    grid = mean_grid([e["grid"] for e in ents], t)
    oracle_lr = oracle_best(grid, t)
    oracle = grid[oracle_lr]
    lrs = sorted(grid)
    inside = lrs[0] < oracle_lr < lrs[-1]
    rows: dict[str, dict] = {}
    table = []

    def add(label: str, lr_cell: str, ratio_cell: str, scores: list[float], per_seed: str | None = None,
            steps_cell: str = "", **more) -> None:
        score = mean(scores)
        rows[label] = {"scores": scores, "score": score, "regret": regret(t, scores, oracle), **more}
        table.append([label, lr_cell, ratio_cell, fmt_score(t, score),
                      per_seed or " / ".join(fmt_score(t, v) for v in scores), signed(rows[label]["regret"]),
                      steps_cell])

    add(ORACLE, fmt(oracle_lr), "1", [e["grid"][lr_key(oracle_lr)] for e in ents], lr=oracle_lr)
    tlf = [e["tlf"] for e in ents]  # a finder without a suggestion scores as diverged
    add(LABELS["tlf"], ", ".join(fmt(x["lr"]) for x in tlf),
        ", ".join("—" if x["lr"] is None else f"{x['lr'] / oracle_lr:.2g}" for x in tlf),
        [st.score_of(t, math.nan) if x["score"] is None else x["score"] for x in tlf],
        " / ".join("none" if x["score"] is None else fmt_score(t, x["score"]) for x in tlf),
        lrs=[x["lr"] for x in tlf])
    for kind in st.ALTERNATIVES:
        alt = [e[kind] for e in ents]
        cell = ", ".join(fmt(x["lr"]) for x in alt)
        add(LABELS[kind], f"d = {cell}" if kind == "prodigy" else cell, "—", [x["score"] for x in alt],
            lrs=[x["lr"] for x in alt])
    ratios = [b["max_lr"] / oracle_lr for b in bare]
    sweep = mean([b["sweep_steps"] / b["training_steps"] for b in bare])
    add(BARE, ", ".join(f"{fmt(b['base_lr'])}–{fmt(b['max_lr'])}" for b in bare), ", ".join(f"{r:.2g}" for r in ratios),
        [b["score"] for b in bare],
        steps_cell=f"{sweep:.2g} ({', '.join(str(b['sweep_steps']) for b in bare)} / {bare[0]['training_steps']})",
        base_lr=[b["base_lr"] for b in bare], max_lr=[b["max_lr"] for b in bare], ratio=ratios,
        ratio_geo_mean=geo_mean(ratios), sweep_fraction=sweep, sweep_steps=[b["sweep_steps"] for b in bare],
        training_steps=bare[0]["training_steps"], schedule=bare[0]["schedule"], stop=[b["stop"] for b in bare])

    print(f"## {name} ({t.family}; {t.optimizer_label}, batch {t.batch_size}, {epochs} epochs, {t.metric})\n")
    print(markdown(["row", "LR per seed", "max_lr / oracle LR", "score", "per seed", "regret",
                    "sweep / training steps"], table) + "\n")
    print("Oracle grid (mean): " + ", ".join(f"{fmt(lr)}: {fmt_score(t, grid[lr])}" for lr in lrs)
          + ("" if inside else f" (best at the grid's edge after {MAX_WIDEN} widenings)") + "\n")
    b = rows[BARE]
    print(f"- {BARE}: {b['schedule']} between base_lr and max_lr; sweep stops: "
          + ", ".join(f"seed {s}: {stop}" for s, stop in zip(seeds, b["stop"])))
    verdicts = {}
    for kind in ANCHOR_ROWS:
        verdicts[kind] = verdict(t, b["score"], rows[LABELS[kind]]["score"])
        print(f"- {BARE} {'loses to' if verdicts[kind] == 'loses' else verdicts[kind]} {LABELS[kind]}: regret {signed(b['regret'])} against "
              f"{signed(rows[LABELS[kind]]['regret'])}")
    print()
    return {"family": t.family, "epochs": epochs, "oracle_lr": oracle_lr, "oracle": oracle, "oracle_inside": inside,
            "grid": {lr_key(lr): grid[lr] for lr in lrs}, "rows": rows, "verdicts": verdicts}


def summary(per_task: dict[str, dict]) -> dict:
    """Print the summary table, the counts and each row's regret over tasks; returns the counts and regrets."""
    names = list(per_task)
    print("## Summary (regret vs oracle in target units, negative = better)\n")
    print(markdown(["task", "family", "oracle LR", f"{BARE} max_lr / oracle", f"{BARE} regret",
                    *(f"{LABELS[k]} regret" for k in ANCHOR_ROWS), *(f"vs {NAMES[k]}" for k in ANCHOR_ROWS)],
                   [[n, p["family"], fmt(p["oracle_lr"]), f"{p['rows'][BARE]['ratio_geo_mean']:.2g}",
                     signed(p["rows"][BARE]["regret"]), *(signed(p["rows"][LABELS[k]]["regret"]) for k in ANCHOR_ROWS),
                     *(p["verdicts"][k] for k in ANCHOR_ROWS)] for n, p in per_task.items()]) + "\n")
    ok = {k: sum(p["verdicts"][k] != "loses" for p in per_task.values()) for k in ANCHOR_ROWS}
    ok["all"] = sum(all(v != "loses" for v in p["verdicts"].values()) for p in per_task.values())
    beats = {k: sum(p["verdicts"][k] == "beats" for p in per_task.values()) for k in ANCHOR_ROWS}
    n = len(names)
    print(f"{BARE} matches or beats " + ", ".join(f"{NAMES[k]} on {ok[k]}" if i else f"{NAMES[k]} on {ok[k]} of {n} tasks"
                                                  for i, k in enumerate(ANCHOR_ROWS))
          + f", all three on {ok['all']} (strictly better: " + ", ".join(f"{NAMES[k]} {beats[k]}" for k in ANCHOR_ROWS)
          + ")\n")
    labels = [ORACLE, BARE, *(LABELS[k] for k in ANCHOR_ROWS)]
    over = {label: {"median": statistics.median([p["rows"][label]["regret"] for p in per_task.values()]),
                    "mean": mean([p["rows"][label]["regret"] for p in per_task.values()])} for label in labels}
    print("## Regret over tasks (target units, negative = better than the oracle)\n")
    print(markdown(["row", "median", "mean"], [[label, signed(v["median"]), signed(v["mean"])]
                                                for label, v in over.items()]) + "\n")
    return {"matches_or_beats": ok, "beats": beats, "task_count": n, "regret": over}


# ----------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = task_arguments(__doc__.split("\n")[0], TASKS)  # the held-out tasks, not the suite's
    p.add_argument("--refresh", action="store_true", help="recompute the cached rows (oracle grids, finder, "
                   "alternatives)")
    p.add_argument("--cache", type=Path, default=CACHE, help="the cache (default benchmarks/held_out_cache.json)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    setup()
    start = time.time()
    epochs = {n: args.epochs or TASKS[n].epochs for n in args.tasks}
    seeds = list(args.seeds)
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    print(f"# Held-out tasks: {BARE} against what users pick instead\n\n{time.strftime('%Y-%m-%d')}, {machine()}; "
          f"{args.workers} worker process(es); seeds {seeds}\n", flush=True)
    print(markdown(["task", "family", "model / data", "optimizer", "batch", "epochs", "metric", "note"],
                   [[n, t.family, f"{getattr(t.net, 'func', t.net).__name__} / {getattr(t.data, 'func', t.data).__name__}",
                     t.optimizer_label, str(t.batch_size), str(epochs[n]),
                     t.metric + (" (higher is better)" if t.higher_is_better else " (lower is better)"), t.note]
                    for n, t in ((n, TASKS[n]) for n in args.tasks)]) + "\n", flush=True)
    pool = (mp.get_context("spawn").Pool(args.workers, initializer=_init, maxtasksperchild=1)
            if args.workers > 1 else None)
    try:
        entries, bare, computed = anchors(pool, args, epochs, cache, [("bare", n, s, epochs[n]) for n in args.tasks
                                                                      for s in seeds])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    per_task = {n: task_block(n, epochs[n], seeds, [entries[key(n, s, epochs[n], GRID_PER_DECADE)] for s in seeds],
                              [bare[("bare", n, s, epochs[n])] for s in seeds]) for n in args.tasks}
    counts = summary(per_task)
    total = time.time() - start
    print(f"Cached rows computed this run: {computed} trainings (the rest from {args.cache.name}); "
          f"{BARE} rows: {len(bare)} trainings\n")
    print(f"Total: {total:.0f} s", flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "seeds": seeds, "workers": args.workers,
              "tasks": per_task, **counts, "computed": computed, "total_s": total}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
