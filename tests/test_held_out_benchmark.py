"""benchmarks/held_out.py and its tasks.

The smoke test runs the script as the README runs the benchmarks, in a subprocess, on one task,
one seed and one epoch, in one process, with its cache in a temporary folder (never the
committed one), then once more on that cache. The fast test checks that every held-out task is
new to the suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import BENCHMARKS, benchmark_modules

pytest.importorskip("lion_pytorch")  # suite_tasks.py, which the tasks import, has a Lion task

SCRIPT = BENCHMARKS / "held_out.py"
COMMITTED_CACHE = BENCHMARKS / "held_out_cache.json"
TASK = "resmlp-tabular"  # the cheapest task: 50 steps per epoch
ROWS = ["oracle (grid search)", "torch-lr-finder", "schedule-free AdamW", "prodigy + cosine", "LRRangeTest()"]


@pytest.fixture(scope="module")
def held_out_tasks():
    return benchmark_modules("held_out_tasks", "suite_tasks")


def test_every_held_out_task_is_new_to_the_suite(held_out_tasks):
    ho, st = held_out_tasks
    families = {t.family for t in st.TASKS.values()}
    optimizers = {t.optimizer for t in st.TASKS.values()}
    assert len(ho.HELD_OUT_TASKS) == 6
    for name, task in ho.HELD_OUT_TASKS.items():
        assert task.name == name and name not in st.TASKS
        assert task.family not in families or task.optimizer not in optimizers, name
        assert task.loss in ("ce", "mse") and task.metric in ("val/acc", "val/loss")
        assert task.grid[0] < task.grid[1] and task.note


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_held_out_prints_every_row_the_counts_and_caches_in_the_given_file(tmp_path):
    for module in ("torch_lr_finder", "schedulefree", "prodigyopt"):
        pytest.importorskip(module)
    from tests.test_benchmarks import table

    cache, out_json = tmp_path / "cache.json", tmp_path / "out.json"
    committed = COMMITTED_CACHE.read_bytes() if COMMITTED_CACHE.exists() else None
    args = ["--tasks", TASK, "--seeds", "0", "--epochs", "1", "--workers", "1", "--cache", str(cache)]
    out = run(*args, "--json", str(out_json)).stdout

    assert re.search(r"^\d{4}-\d{2}-\d{2}, .*torch .*lightning .*; 1 worker process\(es\); seeds \[0\]$", out,
                     re.MULTILINE)
    assert list(table(out, "| task | family")) == [TASK]
    rows = table(out, f"## {TASK}")
    assert list(rows) == ROWS
    report = json.loads(out_json.read_text())
    res = report["tasks"][TASK]
    oracle_lr, bare = res["oracle_lr"], res["rows"]["LRRangeTest()"]
    # the oracle's best is strictly inside its grid, and its row shows that LR and that score
    lrs = sorted(float(lr) for lr in res["grid"])
    assert res["oracle_inside"] and lrs[0] < oracle_lr < lrs[-1]
    assert float(rows["oracle (grid search)"][0]) == pytest.approx(oracle_lr, rel=0.02)
    assert res["oracle"] == res["grid"][f"{oracle_lr:.3g}"] and rows["oracle (grid search)"][4] == "+0.00"
    # LRRangeTest(): max_lr / oracle LR is its max_lr over the oracle's LR, in the report and in the table
    assert bare["ratio"][0] == pytest.approx(bare["max_lr"][0] / oracle_lr, rel=1e-12)
    lr_cell, ratio_cell = rows["LRRangeTest()"][:2]
    assert lr_cell == f"{bare['base_lr'][0]:.2g}–{bare['max_lr'][0]:.2g}" and ratio_cell == f"{bare['ratio'][0]:.2g}"
    assert float(ratio_cell) == pytest.approx(float(lr_cell.split("–")[1]) / float(rows["oracle (grid search)"][0]),
                                              rel=0.1)  # two significant digits each
    steps = rows["LRRangeTest()"][5]
    assert re.fullmatch(rf"[\d.e+-]+ \({bare['sweep_steps'][0]} / 50\)", steps) and bare["sweep_steps"][0] > 0
    # each row's regret is the suite's, against the oracle's score
    for label in ROWS:
        score, regret = res["rows"][label]["score"], res["rows"][label]["regret"]
        higher = score - res["oracle"]  # val/acc: one point of accuracy is one unit
        assert regret == pytest.approx(min(10.0, -100 * higher), abs=1e-9)
        assert float(rows[label][4]) == pytest.approx(regret, abs=0.005)
    # the summary, the counts, the regrets over tasks and the time
    summary = table(out, "## Summary")
    assert list(summary) == [TASK] and summary[TASK][-3:] == [res["verdicts"][k] for k in ("tlf", "schedule-free",
                                                                                           "prodigy")]
    assert set(summary[TASK][-3:]) <= {"beats", "matches", "loses"}
    assert re.search(r"^LRRangeTest\(\) matches or beats torch-lr-finder on [01] of 1 tasks, Schedule-Free AdamW on "
                     r"[01], Prodigy on [01], all three on [01] ", out, re.MULTILINE)
    assert list(table(out, "## Regret over tasks")) == ROWS[:1] + ROWS[-1:] + ROWS[1:-1]
    assert re.search(r"^Total: \d+ s$", out, re.MULTILINE)

    # the cache is the given file: the grid and the three cached rows, not the LRRangeTest() row
    entry = json.loads(cache.read_text())[f"{TASK}|seed=0|epochs=1"]
    assert set(entry) == {"grid", "tlf", "schedule-free", "prodigy"}
    assert set(entry["grid"]) == set(res["grid"])
    assert (COMMITTED_CACHE.read_bytes() if COMMITTED_CACHE.exists() else None) == committed

    # a second run takes every cached row from the cache and trains only LRRangeTest()
    again = run(*args)
    assert "1 jobs in" in again.stderr and "widening" not in again.stderr
    assert table(again.stdout, f"## {TASK}")["oracle (grid search)"] == rows["oracle (grid search)"]
    assert "Cached rows computed this run: 0 trainings" in again.stdout
