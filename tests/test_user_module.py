"""The CLI trains the user's own LightningModule and LightningDataModule, instantiated as configured.

``tests/userpkg/mypkg`` stands for a user's project: it knows nothing of ``lightning_clr``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from lightning_clr.cli.config import ConfigError
from lightning_clr.cli.main import build, train
from tests.conftest import compose_config

pytestmark = pytest.mark.slow  # the CLI on a user's own package, in subprocesses

USERPKG = Path(__file__).resolve().parent / "userpkg"

#: the README's "Your own model from the CLI" example, run from the repository root with
#: PYTHONPATH=tests/userpkg in front of it
EXAMPLE = (
    "python -m lightning_clr.run +schedule=one_cycle trainer.max_epochs=4 "
    "~data +data._target_=mypkg.BlobsDataModule +data.num_classes=5 "
    "~model +model._target_=mypkg.LitClassifier '+model.num_classes=${data.num_classes}'"
)


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "python"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(USERPKG), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def test_readme_example_trains_the_users_module(tmp_path):
    proc = _run(EXAMPLE, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bounds = re.search(r"bounds: base_lr=(\S+) max_lr=(\S+) \(rule=\w+, (\d+) sweep steps", proc.stdout)
    assert bounds, proc.stdout[-2000:]
    base_lr, max_lr, sweep_steps = float(bounds[1]), float(bounds[2]), int(bounds[3])
    assert 0 < base_lr < max_lr and sweep_steps >= 20

    (log_dir,) = {p.parent for p in tmp_path.rglob("events.out.tfevents.*")}
    (ckpt,) = tmp_path.rglob("*.ckpt")  # Lightning's default ModelCheckpoint
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["num_classes"] == 5  # ${data.num_classes} reached the user's constructor
    assert state["state_dict"]["layers.2.weight"].shape == (5, 64)
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert len(acc.Scalars("range_test/loss")) == sweep_steps  # the sweep ran on the user's module
    lrs = [e.value for e in acc.Scalars("lr")]  # the user's own Adam, driven by the 1cycle (every 10th step)
    assert 0.9 * max_lr < max(lrs) < max_lr * 1.001  # up to the found max_lr (printed to 4 digits) ...
    assert lrs[0] < max(lrs) and lrs[-1] < base_lr  # ... and annealed below base_lr at the end
    assert [e.step for e in acc.Scalars("val_acc")] and acc.Scalars("val_acc")[-1].value > 0.9  # its own metric


def test_config_files_of_ones_own_select_the_users_module(tmp_path):
    (tmp_path / "myconf" / "model").mkdir(parents=True)
    (tmp_path / "myconf" / "data").mkdir()
    (tmp_path / "myconf" / "model" / "mine.yaml").write_text(
        "_target_: mypkg.LitClassifier\nnum_classes: ${data.num_classes}\nhidden: 32\n")
    (tmp_path / "myconf" / "data" / "mine.yaml").write_text("_target_: mypkg.BlobsDataModule\nnum_classes: 3\n")
    proc = _run("python -m lightning_clr.run --config-dir myconf model=mine data=mine trainer.max_epochs=1 "
                "finder.num_steps=20 trainer.enable_progress_bar=false", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bounds: base_lr=" in proc.stdout
    (ckpt,) = tmp_path.rglob("*.ckpt")
    weights = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert weights["layers.0.weight"].shape == (32, 16) and weights["layers.2.weight"].shape == (3, 32)


def test_broken_target_is_one_line_with_the_fix(tmp_path):
    proc = _run("python -m lightning_clr.run ~model +model._target_=nopkg.Net", tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: model._target_=nopkg.Net: no module named 'nopkg'; "
        "install the package, or put the folder that holds nopkg/ on PYTHONPATH"
    )


USER = ["~data", "+data._target_=mypkg.BlobsDataModule", "+data.num_classes=5"]

ERRORS = {
    "keys-left-from-the-shipped-model": (
        ["model._target_=mypkg.LitClassifier"],
        ("model: mypkg.LitClassifier takes no argument net, optimizer, head_lr_scale; start from an empty node: "
        "~model +model._target_=mypkg.LitClassifier (and +model.ARG=VALUE for its arguments)"),
    ),
    "keys-left-from-the-shipped-data": (
        ["data=synthetic", "data._target_=mypkg.BlobsDataModule"],
        ("data: mypkg.BlobsDataModule takes no argument input_length, noise, max_shift, num_workers; remove them "
        "with ~data.input_length ~data.noise ~data.max_shift ~data.num_workers, or start from an empty node: "
        "~data +data._target_=mypkg.BlobsDataModule (and +data.ARG=VALUE for its arguments)"),
    ),
    "required-argument-the-data-node-has": (
        [*USER, "~model", "+model._target_=mypkg.LitClassifier"],
        "model: mypkg.LitClassifier needs num_classes; add '+model.num_classes=${data.num_classes}'",
    ),
    "required-argument": (
        ["~model", "+model._target_=mypkg.LitClassifier"],
        "model: mypkg.LitClassifier needs num_classes; add +model.num_classes=VALUE",
    ),
    "interpolation-to-nowhere": (
        ["~data", "+data._target_=mypkg.BlobsDataModule", "~model", "+model._target_=mypkg.LitClassifier",
         "+model.num_classes=${data.num_classes}"],
        ("model.num_classes: Interpolation key 'data.num_classes' not found; add the key it points to, "
        "or give model.num_classes a value"),
    ),
    "no-such-name": (
        ["~model", "+model._target_=mypkg.LitClasifier"],
        ("model._target_=mypkg.LitClasifier: module 'mypkg' has no attribute 'LitClasifier'; "
        "check the spelling of the name after the module"),
    ),
    "not-a-lightning-module": (
        [*USER, "~model", "+model._target_=mypkg.BlobsDataModule"],
        ("model._target_=mypkg.BlobsDataModule built a BlobsDataModule, not a LightningModule; "
        "point model._target_ at a LightningModule subclass"),
    ),
    "no-target": (
        ["~model", "+model.hidden=3"],
        ("model: the node has no _target_; add +model._target_=package.module.Class, or select a shipped option "
        "with model=NAME"),
    ),
}


@pytest.mark.parametrize("overrides, message", ERRORS.values(), ids=ERRORS.keys())
def test_target_errors_name_the_key_and_the_fix(overrides, message, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(USERPKG))
    with pytest.raises(ConfigError) as err:
        build(compose_config(overrides, tmp_path))
    assert str(err.value) == message


@pytest.mark.parametrize("fix", [
    ["data=synthetic", "data._target_=mypkg.BlobsDataModule", "~data.input_length", "~data.noise",
     "~data.max_shift", "~data.num_workers", "~model", "+model._target_=mypkg.LitClassifier",
     "+model.num_classes=${data.num_classes}", "+model.num_features=8", "+data.num_features=8"],
    [*USER, "~model", "+model._target_=mypkg.LitClassifier", "+model.num_classes=${data.num_classes}"],
], ids=["removed-keys", "interpolated-argument"])
def test_the_suggested_fixes_build(fix, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(USERPKG))
    import mypkg

    _, model, datamodule, _ = build(compose_config(fix, tmp_path))
    assert type(model) is mypkg.LitClassifier and type(datamodule) is mypkg.BlobsDataModule
    datamodule.setup("fit")
    x, _y = next(iter(datamodule.train_dataloader()))
    assert model(x).shape == (len(x), datamodule.num_classes)
    assert model.hparams.num_classes == datamodule.num_classes == (4 if "data=synthetic" in fix else 5)


class SelfServedModule(L.LightningModule):
    """A module that serves its own loader, so the config needs no ``data`` node."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def train_dataloader(self) -> DataLoader:
        x = torch.randn(128, 4, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_without_a_data_node_the_module_serves_its_loaders(tmp_path):
    overrides = ["~data", "~model", "+model._target_=tests.test_user_module.SelfServedModule", "trainer.max_epochs=1",
                 "finder.num_steps=24", "finder.max_extensions=0", "trainer.enable_progress_bar=false", "logger=csv"]
    metrics = train(compose_config(overrides, tmp_path))
    assert math.isfinite(metrics["train_loss"])
    (csv_file,) = tmp_path.rglob("metrics.csv")
    with csv_file.open() as f:
        rows = list(csv.DictReader(f))
    assert sum(1 for r in rows if r.get("range_test/loss")) == 24  # the sweep ran on the module's own loader


def test_the_readme_shows_exactly_the_tested_example():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Your own model from the CLI", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    command = " ".join(line.rstrip(" \\").strip() for line in block.strip().splitlines())
    assert command == f"PYTHONPATH=tests/userpkg {EXAMPLE}"
