"""Smoke test of benchmarks/suite.py: the whole pipeline on a tiny budget prints every table.

Two MNIST-1D tasks from two families (so leave-one-family-out has two folds), one seed, one
epoch, a one-point-per-decade grid, short recorded sweeps, a handful of candidates and two
schedules, in one process; the anchors go to a temporary cache, never the committed one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch_lr_finder")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"
TASKS = ("mlp-mnist1d", "ae-mnist1d")


def test_suite_prints_every_row_target_and_the_study(tmp_path):
    cache = tmp_path / "anchors.json"
    args = [sys.executable, str(SCRIPT), "--tasks", *TASKS, "--seeds", "0", "--epochs", "1", "--grid-per-decade", "1",
            "--max-widen", "0", "--record-steps", "60", "30", "--small-study", "--schedules", "Constant", "OneCycle",
            "OneCycle(pct_start=0.25)",
            "--workers", "1", "--refresh-anchors", "--anchors", str(cache), "--json", str(tmp_path / "out.json")]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for name in TASKS:
        section = out[out.index(f"## {name} "):]
        for row in ("| oracle (grid search) |", "| lightning lr_find |", "| torch-lr-finder |", "| LRRangeTest() (",
                    "| ours + Constant |", "| ours + OneCycle |"):
            assert row in section.split("\n## ")[0], (name, row)
        for target in ("best of ours", "default schedule", "max_lr (held-out defaults"):
            assert any(line.startswith(("- PASS " + target, "- MISS " + target)) for line in section.splitlines())
        assert f"| {name} |" in out[out.index("## Summary"):]
    assert "## Defaults study (leave-one-family-out)" in out and "| mean |" in out
    assert "Default schedule chosen on all families:" in out
    shapes = out[out.index("## Shapes"):].split("\n## ")[0]  # a schedule with two trained variants gets its shape chosen
    assert "| OneCycle | OneCycle(pct_start=0.25) |" in shapes and "Shape chosen on all families: OneCycle:" in shapes
    # the anchors were cached under task, seed and epochs; the report names every chosen value
    assert {f"{name}|seed=0|epochs=1|per_decade=1" for name in TASKS} <= set(json.loads(cache.read_text()))
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["chosen"]) >= {"start_lr", "end_lr", "num_steps", "ema_beta", "divergence_threshold", "rule",
                                     "rule_options"}
    assert report["default_schedule"] in ("Constant", "OneCycle", "OneCycle(pct_start=0.25)")
    assert report["shapes"]["OneCycle"] in ("OneCycle", "OneCycle(pct_start=0.25)")
    assert set(report["tasks"]) == set(TASKS)
