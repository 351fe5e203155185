"""Bad input through the real command line: exit status 2, one line naming the key, nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from lightning_clr.models import CNN1D, MLP, Classifier
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # every test runs the CLI in a subprocess

# id: (overrides, words the error line must contain, stage at which it fails)
#   compose: Hydra refuses the override (no run directory at all)
#   build:   a constructor refuses the value (before any data, Trainer or log file)
#   fit:     the range test refuses to start (before the first training step)
CASES = {
    "negative-lr": (["finder.start_lr=-1"], ["finder", "start_lr", "-1"], "build"),
    "start-above-end": (["finder.start_lr=1", "finder.end_lr=0.5"], ["end_lr (0.5)", "start_lr (1.0)"], "build"),
    "renamed-key": (["finder.min_lr=1e-4"], ["finder.min_lr", "renamed", "finder.start_lr"], "compose"),
    "too-few-steps": (["finder.num_steps=5"], ["finder", "num_steps", "got 5"], "build"),
    "unknown-schedule": (["+schedule=cyclic"], ["schedule=cyclic", "no such option", "triangular2"], "compose"),
    "unknown-key": (["finder.num_step=50"], ["finder.num_step", "unknown key", "num_steps"], "compose"),
    "unknown-key-appended": (["+schedule=sgdr", "+schedule.cycle_length=3"], ["schedule", "cycle_length"], "build"),
    "wrong-type": (["finder.num_steps=many"], ["finder.num_steps=many", "Integer"], "compose"),
    "zero-cycle-length": (["+schedule=sgdr", "schedule.cycle_epochs=0"], ["SGDR", "cycle_epochs", "got 0"], "build"),
    "pct-start-1.5": (["+schedule=one_cycle", "schedule.pct_start=1.5"], ["OneCycle", "pct_start", "1.5"], "build"),
    "missing-data-dir": (["data.data_dir=/nonexistent/mnist1d"], ["data_dir", "/nonexistent/mnist1d"], "build"),
    "missing-checkpoint": (["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path=/nonexistent/last.ckpt", "no such"],
                           "build"),
    "enabled-removed": (["finder.enabled=false"], ["finder.enabled", "finder.bounds=[BASE_LR,MAX_LR]"], "compose"),
    "bounds-reversed": (["finder.bounds=[0.1,0.01]"], ["bounds", "base_lr=0.1", "max_lr=0.01"], "build"),
    "one-cycle-without-end": (["data=synthetic", "+schedule=one_cycle", "trainer.max_epochs=-1"],
                              ["OneCycle", "total_steps", "max_epochs"], "fit"),
    "group-scales-per-group": (["data=synthetic", "finder.group_scales=[1,2]"],
                               ["group_scales=[1.0, 2.0]", "2 entries", "1 param groups"], "fit"),
    "nan-at-first-step": (["data=synthetic", "data.noise=nan"], ["not finite", "first range-test step"], "fit"),
    "list-typo": (["finder.bounds=[0.01,0.3"], ["finder.bounds=[0.01,0.3", "cannot parse", "close every bracket"],
                  "compose"),
    "run-dir-name-too-long": ([f"hydra.run.dir={'x' * 300}"], ["hydra.run.dir=xxxx", "File name too long",
                                                                "pick another hydra.run.dir"], "compose"),
    "checkpoint-name-too-long": ([f"+ckpt_path={'y' * 300}.ckpt"], ["ckpt_path=yyyy", "file name too long"], "build"),
    "ckpt-path-last-new-run-dir": (["ckpt_path=last"], ["ckpt_path=last", "has no last.ckpt", "+ckpt_path="], "build"),
}


@pytest.fixture(scope="module")
def results(cli_cases) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every case run once, each in a folder of its own, on the shared CLI pool."""
    return cli_cases({name: case[0] for name, case in CASES.items()})


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
    proc = run_cli(["finder.start_lr=-1"], tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "start_lr must be a finite number in (0, 10000]" in proc.stderr


def _lightning_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    """A checkpoint of a ``Classifier`` around ``net``, as ``Trainer.save_checkpoint`` would lay it out."""
    model = Classifier(net, num_classes=4)
    torch.save({"epoch": 0, "global_step": 4, "pytorch-lightning_version": "2.6.0", "state_dict": model.state_dict(),
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}, path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "another-model"])
def test_an_unusable_checkpoint_fails_before_training_on_one_line(damage, tmp_path):
    good = _lightning_checkpoint(tmp_path / "mlp.ckpt", MLP(40, 4, hidden=(100, 100)))
    if damage == "truncated":
        path = tmp_path / "truncated.ckpt"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        words = [f"ckpt_path={path}", "truncated or corrupt", "pass an intact checkpoint"]
    else:
        path = _lightning_checkpoint(tmp_path / "cnn.ckpt", CNN1D(num_classes=4))
        words = [f"ckpt_path={path}", "another model", "missing net.net.0.weight", "unexpected net.features",
                 "model= and model.* overrides"]
    before = path.read_bytes()
    proc = run_cli(["data=synthetic", "model=mlp", f"+ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert path.read_bytes() == before
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [s for s in proc.stderr.splitlines() if s.startswith("error: ")]
    for word in words:
        assert word in line, line
    assert not list((tmp_path / "run").rglob("*tfevents*")) and not list((tmp_path / "run").rglob("*.ckpt"))
