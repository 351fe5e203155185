"""Schedule-Free AdamW at its default LR against Schedule-Free AdamW with its LR found by ``LRRangeTest()``.

    pip install -e ".[bench]" && python benchmarks/schedule_free.py     # about 2 minutes on 2 cores with the suite's cache

Schedule-Free AdamW (``schedulefree.AdamWScheduleFree``) needs no schedule, but it still has a
learning rate. For each task of the suite (``suite_tasks.py``; ``--tasks`` picks some), on
seeds 0 and 1, with the task's network, loss, weight decay and epochs, and a warm-up of 5% of
the run:

- ``default``: lr 0.0025, the package's default: the suite's "schedule-free AdamW" row, read
  from ``suite_anchors.json`` when it holds the task, seed and epochs (``--no-cache``: trained);
- ``LRRangeTest()``: the library as installed, no argument. With a Schedule-Free optimizer it
  sweeps the LR, sets the optimizer's lr to the found ``max_lr`` and installs no schedule; the
  table shows the lr the optimizer ended with and any scheduler that was installed.

Both rows switch the optimizer between train and eval mode as the package's README asks
(``suite_tasks.ScheduleFreeModes``, BatchNorm statistics recomputed at the evaluated weights).
Per task: both scores, the LRs and the winner on the mean over seeds; at the end, the number
of tasks where the range test's LR beats the default.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import suite_tasks as st
from common import machine, mean, setup
from suite import ANCHORS, COST, better, fmt, fmt_score, key, task_arguments

from lightning_clr import LRRangeTest
from lightning_clr.cli.compare import markdown

_ROOT: list[str] = []


def work(job: tuple[str, str, int, int]) -> tuple[tuple, dict]:
    """Train one row (``"default"`` or ``"range test"``) of one task and seed; a failed range test is reported."""
    if not _ROOT:
        setup()
        _ROOT.append(tempfile.mkdtemp(prefix="lightning_clr_schedule_free_"))
    row, name, seed, epochs = job
    task = st.TASKS[name]
    if row == "default":
        return job, st.fit_alternative(task, "schedule-free", seed, epochs, _ROOT[0])
    finder = LRRangeTest(progress_bar=False)
    try:
        out = st.fit_alternative(task, "schedule-free", seed, epochs, _ROOT[0], finder=finder)
    except Exception as err:  # noqa: BLE001 - a library without Schedule-Free support fails in its sweep
        return job, {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return job, {**out, "max_lr": finder.result.max_lr}


def cached_defaults(path: Path, names: Sequence[str], seeds: Sequence[int], epochs: dict[str, int]) -> dict:
    """The suite's Schedule-Free rows at the default lr (grid density 2, the suite's default), where cached."""
    cache = json.loads(path.read_text()) if path.exists() else {}
    out = {}
    for n in names:
        for s in seeds:
            row = cache.get(key(n, s, epochs[n], 2), {}).get("schedule-free")
            if row is not None:
                out[("default", n, s, epochs[n])] = {"score": row["score"], "lr": row["lr"], "schedule": None,
                                                     "sweep_steps": 0}
    return out


def margin(task: st.SuiteTask, a: float, b: float) -> str:
    """``a`` against ``b``: accuracy points, or percent of ``b``'s loss (negative = ``a`` better)."""
    if task.higher_is_better:
        return f"{100 * (a - b):+.1f} points"
    return f"{100 * (a / b - 1):+.1f} %" if math.isfinite(a) and math.isfinite(b) else "—"


def task_block(name: str, epochs: int, seeds: Sequence[int], res: dict) -> tuple[list[str], bool | None]:
    """Print one task's table and winner; returns its summary row and whether the range test won (None: it failed)."""
    t = st.TASKS[name]
    dflt = [res[("default", name, s, epochs)] for s in seeds]
    found = [res[("range test", name, s, epochs)] for s in seeds]
    d = mean([r["score"] for r in dflt])
    print(f"## {name} ({t.family}; Schedule-Free AdamW, wd {t.options.get('weight_decay', 0.0):g}, batch "
          f"{t.batch_size}, {epochs} epochs, {t.metric})\n")
    rows = [["schedule-free AdamW, default lr", fmt(dflt[0]["lr"]), "—", "—", fmt_score(t, d),
             " / ".join(fmt_score(t, r["score"]) for r in dflt)]]
    errors = [r["error"] for r in found if "error" in r]
    if errors:
        rows.append(["LRRangeTest() + schedule-free AdamW", "failed", "—", "—", "—", errors[0]])
        print(markdown(["row", "lr", "LRRangeTest() max_lr", "schedule installed", "score", "per seed"], rows) + "\n")
        return [name, t.family, fmt_score(t, d), "failed", "—", "—", "—"], None
    f = mean([r["score"] for r in found])
    rows.append(["LRRangeTest() + schedule-free AdamW", ", ".join(fmt(r["lr"]) for r in found),
                 ", ".join(fmt(r["max_lr"]) for r in found), ", ".join(str(r["schedule"] or "none") for r in found),
                 fmt_score(t, f), " / ".join(fmt_score(t, r["score"]) for r in found)])
    print(markdown(["row", "lr", "LRRangeTest() max_lr", "schedule installed", "score", "per seed"], rows) + "\n")
    won = better(t, f, d)
    winner = "LRRangeTest() + schedule-free AdamW" if won else ("tie" if f == d else "schedule-free AdamW, default lr")
    print(f"- winner: {winner} ({margin(t, f, d)} for the range test's lr; sweep "
          f"{mean([r['sweep_steps'] for r in found]):.0f} steps, training {epochs * t.steps_per_epoch})\n")
    lr_ratio = mean([r["lr"] for r in found]) / dflt[0]["lr"]
    return [name, t.family, fmt_score(t, d), fmt_score(t, f), f"{lr_ratio:.2g}", margin(t, f, d), winner], won


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = task_arguments(__doc__.split("\n")[0])
    p.add_argument("--anchors", type=Path, default=ANCHORS, help="the suite's cache, for the default-lr rows")
    p.add_argument("--no-cache", action="store_true", help="train the default-lr rows too")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse(argv)
    setup()
    start = time.time()
    epochs = {n: args.epochs or st.TASKS[n].epochs for n in args.tasks}
    res = {} if args.no_cache else cached_defaults(args.anchors, args.tasks, args.seeds, epochs)
    jobs = [(row, n, s, epochs[n]) for row in ("range test", "default") for n in args.tasks for s in args.seeds]
    jobs = sorted((j for j in jobs if j not in res), key=lambda j: -COST.get(j[1], 1))
    print(f"# Schedule-Free AdamW: default lr against LRRangeTest()\n\n{time.strftime('%Y-%m-%d')}, {machine()}; "
          f"{args.workers} worker process(es); seeds {list(args.seeds)}; {len(res)} default-lr rows from "
          f"{args.anchors.name}\n", flush=True)
    pool = mp.get_context("spawn").Pool(args.workers) if args.workers > 1 else None
    try:
        res.update(dict(pool.imap_unordered(work, jobs) if pool is not None else map(work, jobs)))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary, wins = [], {}
    for n in args.tasks:
        row, wins[n] = task_block(n, epochs[n], args.seeds, res)
        summary.append(row)
    print("## Summary\n")
    print(markdown(["task", "family", "default lr", "LRRangeTest() lr", "lr / default", "range test vs default",
                    "winner"], summary) + "\n")
    ran = [n for n, w in wins.items() if w is not None]
    print(f"LRRangeTest() + Schedule-Free AdamW beats Schedule-Free AdamW at its default lr on "
          f"{sum(wins[n] for n in ran)} of {len(ran)} tasks" + (f" ({len(args.tasks) - len(ran)} failed)"
                                                                 if len(ran) < len(args.tasks) else "") + "\n")
    print(f"Total: {time.time() - start:.0f} s", flush=True)
    report = {"wins": sum(wins[n] for n in ran), "tasks": len(ran), "failed": [n for n in args.tasks if n not in ran],
              "rows": {f"{j[0]}|{j[1]}|seed={j[2]}": r for j, r in res.items()}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
