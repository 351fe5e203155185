"""Bad input through the real command line: exit status 2, one line naming the key, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lightning_clr.config import ConfigError, split_schedule
from tests.conftest import compose_config

# id: (overrides, words the error line must contain, stage at which it fails)
#   compose: Hydra refuses the override (no run directory at all)
#   build:   a constructor refuses the value (before any data, Trainer or log file)
#   fit:     the range test refuses to start (before the first training step)
CASES = {
    "negative-lr": (["finder.min_lr=-1"], ["finder", "min_lr", "-1"], "build"),
    "min-above-max": (["finder.min_lr=1", "finder.max_lr=0.5"], ["max_lr (0.5)", "min_lr (1.0)"], "build"),
    "too-few-steps": (["finder.num_steps=5"], ["num_steps", "5", ">= 10"], "build"),
    "unknown-schedule": (["+schedule=cyclic"], ["schedule=cyclic", "no such option", "triangular2"], "compose"),
    "unknown-key": (["finder.num_step=50"], ["finder.num_step", "unknown key", "num_steps"], "compose"),
    "unknown-key-appended": (["+schedule=sgdr", "+schedule.cycle_length=3"], ["schedule", "cycle_length"], "build"),
    "wrong-type": (["finder.num_steps=many"], ["finder.num_steps=many", "Integer"], "compose"),
    "zero-cycle-length": (["+schedule=sgdr", "schedule.cycle_epochs=0"], ["SGDR", "cycle_epochs", "got 0"], "build"),
    "pct-start-1.5": (["+schedule=one_cycle", "schedule.pct_start=1.5"], ["OneCycle", "pct_start", "1.5"], "build"),
    "missing-data-dir": (["data.data_dir=/nonexistent/mnist1d"], ["data_dir", "/nonexistent/mnist1d"], "build"),
    "missing-checkpoint": (["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path=/nonexistent/last.ckpt", "no such"],
                           "build"),
    "disabled-without-bounds": (["finder.enabled=false"], ["finder.enabled=false", "schedule.base_lr"], "build"),
    "bounds-reversed": (["finder.enabled=false", "+schedule=triangular", "schedule.base_lr=0.1",
                         "schedule.max_lr=0.01"], ["base_lr=0.1", "max_lr=0.01"], "build"),
    "one-cycle-without-end": (["data=synthetic", "+schedule=one_cycle", "trainer.max_epochs=-1"],
                              ["OneCycle", "total_steps", "max_epochs"], "fit"),
    "group-scales-per-group": (["data=synthetic", "finder.group_scales=[1,2]"],
                               ["group_scales=[1.0, 2.0]", "2 entries", "1 param groups"], "fit"),
    "nan-at-first-step": (["data=synthetic", "data.noise=nan"], ["not finite", "first range-test step"], "fit"),
}


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environ.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "lightning_clr.run", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every case run once, two at a time, each in a directory of its own."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in CASES}
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = {name: pool.submit(_cli, CASES[name][0], dirs[name]) for name in CASES}
        return {name: (future.result(), dirs[name]) for name, future in procs.items()}


def test_table_is_large_enough():
    assert len(CASES) >= 12


@pytest.mark.parametrize("name", list(CASES))
def test_bad_override_fails_with_one_line(name, results):
    _, words, stage = CASES[name]
    proc, cwd = results[name]
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for word in words:
        assert word in errors[0]
    files = [p for p in cwd.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix == ".ckpt"]
    if stage == "compose":
        assert not files  # not even a run directory
    if stage in ("compose", "build"):
        assert not [p for p in files if "tfevents" in p.name or p.suffix == ".csv"]


def test_full_error_shows_the_traceback(tmp_path):
    proc = _cli(["finder.min_lr=-1"], tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "min_lr must be > 0" in proc.stderr


@pytest.mark.parametrize("overrides, match", [
    (["+schedule=sgdr", "schedule.base_lr=0.01"], r"schedule.base_lr=0.01 needs schedule.max_lr too"),
    (["+schedule=sgdr", "schedule.base_lr=0.01", "schedule.max_lr=0.1", "finder.bounds=[0.01,0.1]"],
     r"finder.bounds=\[0.01, 0.1\] and schedule.base_lr/max_lr=\[0.01, 0.1\] both set bounds"),
], ids=["one-bound", "bounds-twice"])
def test_explicit_bounds_are_given_once_and_whole(overrides, match):
    with pytest.raises(ConfigError, match=match):
        split_schedule(compose_config(overrides))


def test_explicit_bounds_reach_the_finder_and_leave_the_spec():
    cfg = compose_config(["finder.enabled=false", "+schedule=sgdr", "schedule.base_lr=0.01", "schedule.max_lr=0.1"])
    node, bounds = split_schedule(cfg)
    assert bounds == (0.01, 0.1) and "base_lr" not in node and "max_lr" not in node
    assert split_schedule(compose_config(["+schedule=sgdr"]))[1] is None
