"""Smoke tests of benchmarks/: each script runs end to end on a tiny budget and prints its tables.

The scripts run as the README runs them (``python benchmarks/NAME.py``), in a subprocess,
on 1000 MNIST-1D samples (8 steps per epoch), 2 epochs and one seed.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys

import pytest

from tests.helpers import BENCHMARKS

pytest.importorskip("torch_lr_finder")
pytestmark = pytest.mark.slow  # every test runs a benchmark script in a subprocess

TINY = ["--num-samples", "1000", "--epochs", "2"]


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table(text: str, after: str) -> dict[str, list[str]]:
    """The first markdown table at or after ``after`` in ``text``: first cell -> other cells."""
    lines = text[text.index(after):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block[2:]]  # skip header, rule
    return {cells[0]: cells[1:] for cells in rows}


def test_outcome_prints_every_row_and_the_targets():
    out = run("outcome.py", *TINY, "--seeds", "0", "--tasks", "cnn-sgd", "--grid-per-decade", "1")
    rows = table(out, "## 1-D CNN")
    schedules = ["Constant", "Triangular", "Triangular2", "ExpRange", "SGDR", "OneCycle"]
    expected = ["oracle (grid search)", "lightning", "lightning, 1 epoch", "torch-lr-finder",
                "torch-lr-finder, 1 epoch", *(f"ours + {s}" for s in schedules),
                *(f"ours + {s}, 1-epoch budget" for s in schedules)]
    assert list(rows) == expected
    assert rows["oracle (grid search)"][1] == "4 trainings per seed (8 epochs)"  # 1e-3, 1e-2, 0.1, 1
    for name in ["oracle (grid search)", *(f"ours + {s}" for s in schedules)]:
        final, per_seed, best = float(rows[name][2]), float(rows[name][3]), float(rows[name][4])
        assert 0.0 <= final <= best <= 1.0 and per_seed == pytest.approx(final, abs=5e-4)  # one seed
    assert rows["ours + Constant"][1] == "20 steps, in memory"  # one epoch is 8 steps; LRRangeTest needs 20
    # the oracle reaches its own final accuracy, at the latest in the last epoch
    assert 1.0 <= float(rows["oracle (grid search)"][5]) <= 2.0
    assert len(re.findall(r"^- (PASS|MISS) ", out, flags=re.MULTILINE)) == 4
    assert "best of ours trained for half the epochs" in out


def test_speed_prints_ratios_disk_and_memory():
    out = run("speed.py", "--num-samples", "1000", "--epochs", "2", "--pairs", "1")
    steps = table(out, "## Step time")
    assert list(steps) == ["Triangular vs CyclicLR", "SGDR vs CosineAnnealingWarmRestarts"]
    for cells in steps.values():
        assert 0.2 < float(cells[2]) < 5.0  # ours / theirs, same work per step
    ours_us, theirs_us, _, _ = table(out, "| comparison | ours µs")["Triangular vs CyclicLR"]
    assert abs(float(ours_us) - float(theirs_us)) < 0.25 * float(theirs_us)  # torch's CyclicLR on both sides
    tests = table(out, "## Range-test wall time")
    assert len(tests) == 2 and all(float(c[2]) > 0 for c in tests.values())
    disk = table(out, "## Disk and memory")
    assert disk["LRRangeTest"] == ["0", "0"]  # nothing written, nothing left
    assert int(disk["Tuner.lr_find"][0].replace(",", "")) > 10_000  # its checkpoint
    memory = table(out, "| model + optimizer")
    for cells in memory.values():
        ratio = float(cells[2])
        assert 1.0 <= ratio < 1.01  # a copy of weights, buffers and optimizer state, plus metric states


def test_snapshots_prints_every_snapshot_and_the_three_margins():
    pytest.importorskip("lion_pytorch")  # suite_tasks.py, which it imports, has a Lion task
    out = run("snapshots.py", *TINY[:2], "--epochs", "4", "--seeds", "0", "--tasks", "cnn-sgd", "mlp-blobs")
    for title in ("## 1-D CNN", "## mlp-blobs (suite: MLP classifier"):  # an MNIST-1D block and a suite task
        rows = table(out, title)
        assert set(rows) == {"0", "mean"}
        snapshots = [float(a) for a in rows["0"][1].split(" / ")]
        # one per cycle; the last is the final model (snapshots print 3 digits, the columns 4)
        assert len(snapshots) == 4 and float(rows["0"][2]) == pytest.approx(snapshots[-1], abs=6e-4)
        assert float(rows["0"][3]) == pytest.approx(max(snapshots), abs=6e-4)
    for label in ("best single snapshot", "final model", "1cycle single model"):
        assert re.search(rf"^- (PASS|MISS) ensemble vs {label}: [+-]\d", out, re.MULTILINE), label


def test_shallow_prints_both_range_tests_and_the_margin():
    pytest.importorskip("lion_pytorch")  # suite_tasks.py, which it imports, has a Lion task
    out = run("shallow.py", "--seeds", "0", "--epochs", "1")
    row = table(out, "## cnn-walks")["0"]
    fall, reruns, points = float(row[0].rstrip("%")), int(row[3]), int(row[4])
    assert fall < 10 and reruns >= 1 and points > 200  # cnn-walks is shallow at 200 steps: the rerun's curve is kept
    assert float(row[5].rstrip("%")) > fall  # the longer sweep cut the loss further
    assert re.search(r"^- defaults against no rerun: [+-]\d", out, re.MULTILINE)


def test_flatness_prints_six_schedules_the_correlations_and_a_plot(tmp_path):
    png = tmp_path / "flatness.png"
    # 6 epochs: StepDecay drops every 5 epochs and refuses a run it would never drop in
    out = run("flatness.py", *TINY[:2], "--epochs", "6", "--seeds", "0", "--png", str(png))
    means = table(out, "Mean per schedule")
    assert list(means) == ["Constant", "StepDecay", "Cosine", "Triangular2", "SGDR", "OneCycle"]
    assert re.search(r"rise @ 0.1 vs gap \(loss\): Spearman rho = [+-]\d\.\d{3}", out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_free_prints_both_rows_the_winner_and_the_count(tmp_path):
    pytest.importorskip("schedulefree")
    out = run("schedule_free.py", "--tasks", "short-digits", "--seeds", "0", "--epochs", "1", "--workers", "1",
              "--no-cache", "--json", str(tmp_path / "out.json"))
    rows = table(out, "## short-digits")
    assert list(rows) == ["schedule-free AdamW, default lr", "LRRangeTest() + schedule-free AdamW"]
    lr, max_lr, installed, score = rows["LRRangeTest() + schedule-free AdamW"][:4]
    assert installed == "none"  # Schedule-Free brings its own schedule: the range test installs none
    assert lr == max_lr and float(lr) > 0  # the optimizer trains at the found max_lr
    assert rows["schedule-free AdamW, default lr"][0] == "0.0025" and float(score) > 0
    assert re.search(r"^- winner: .* \([+-]\d+\.\d %", out, re.MULTILINE)
    summary = table(out, "## Summary")
    assert list(summary) == ["short-digits"] and summary["short-digits"][-1] in (
        "LRRangeTest() + schedule-free AdamW", "schedule-free AdamW, default lr", "tie")
    assert re.search(r"beats Schedule-Free AdamW at its default lr on [01] of 1 tasks$", out, re.MULTILINE)


def test_second_sweep_starts_from_the_first_max_lr_at_the_asked_step(tmp_path):
    out = run("second_sweep.py", "--tasks", "short-digits", "--seeds", "0", "--at", "0.1", "--workers", "1",
              "--json", str(tmp_path / "out.json"))
    rows = table(out, "## Readings")
    assert list(rows)[:2] == ["first sweep", "smith at 0.1"] and len(rows) == 8
    record = json.loads((tmp_path / "out.json").read_text())["records"]["short-digits/0/0.1"]
    assert record["lrs"][0] == pytest.approx(record["max_lr"] / 10, rel=1e-12)  # from the first sweep's max_lr
    assert 20 <= len(record["lrs"]) <= 60 and record["lrs"] == sorted(record["lrs"])
    assert record["step"] == round(0.1 * record["total"])  # at a tenth of the run, and the training stopped there
