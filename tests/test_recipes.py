"""Every paper recipe composes through the real search path and trains one step; the CIFAR-10 reader."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lightning_clr.recipes
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lightning_clr.cli.main import build, config_dir
from lightning_clr.data import CIFAR10DataModule, FakeCIFAR10DataModule
from lightning_clr.data.cifar import random_crop_flip
from tests.conftest import compose_config

RECIPE_DIR = Path(next(iter(lightning_clr.recipes.__path__))) / "recipe"
RECIPES = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
ONE_STEP = ["++trainer.max_steps=1", "trainer.accelerator=cpu", "trainer.devices=1", "++trainer.limit_val_batches=1",
            "++trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false"]
# CIFAR recipes run on 8 generated images in batches of 2 (4 steps per epoch); WRN-28-20 (145M
# parameters) is narrowed to WRN-28-1 so that its step fits a CPU test
FAKE = ["data=fake_cifar10", "data.num_train=8", "data.num_val=4", "data.batch_size=2"]
SHRINK = {"sgdr_cifar10": ["model.net.widen_factor=1"], "mnist1d_compare": ["finder.num_steps=20"],
          "snapshot_mnist1d": ["finder.num_steps=20", "schedule.cycle_steps=1"]}
MNIST1D = ("mnist1d_compare", "snapshot_mnist1d")


def _sgdr(step: int, base: float, top: float, cycle: float) -> float:
    return base + 0.5 * (top - base) * (1 + math.cos(math.pi * step / cycle))


# the LR after the first optimizer step, from each paper's numbers (4 fake steps per epoch)
LR_AFTER_ONE_STEP = {
    "clr_cifar10": 0.001 + (0.006 - 0.001) / 2000,          # triangular2, stepsize 2000
    "one_cycle_resnet56": 0.1 + (3.0 - 0.1) / 5000,         # one triangle 0.1 -> 3.0, stepsize 5000
    "sgdr_cifar10": _sgdr(1, 1e-6, 0.05, 7812),              # T0 = 7812 steps
    "snapshot_cifar10": _sgdr(1, 1e-6, 0.2, 40 * 4),         # 40-epoch cycles
}


def test_the_recipes_are_found_and_documented():
    assert set(RECIPES) == {"clr_cifar10", "sgdr_cifar10", "snapshot_cifar10", "one_cycle_resnet56",
                            "mnist1d_compare", "snapshot_mnist1d"}
    readme = (RECIPE_DIR.parent / "README.md").read_text()
    for name in RECIPES:
        head = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()
        assert head[0] == "# @package _global_"
        assert head[1].startswith("# python -m lightning_clr.run ") and f"+recipe={name}" in head[1]
        assert f"+recipe={name}" in readme


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_one_step(name, tmp_path):
    cifar = name not in MNIST1D
    cfg = compose_config([f"+recipe={name}", *ONE_STEP, *(FAKE if cifar else []), *SHRINK.get(name, [])], tmp_path)
    trainer, model, datamodule, finder = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert math.isfinite(trainer.callback_metrics["train/loss_step"].item())
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    if cifar:
        assert isinstance(datamodule, FakeCIFAR10DataModule) and datamodule.augment == cfg.data.augment
        assert (finder.result.base_lr, finder.result.max_lr) == tuple(cfg.finder.bounds)
        assert lr == pytest.approx(LR_AFTER_ONE_STEP[name], rel=1e-9)
    elif name == "snapshot_mnist1d":  # a real range test; one-step cycles: step 1 is a full-height restart
        assert finder.result.stop_reason != "explicit bounds"
        assert lr == pytest.approx(finder.result.max_lr, rel=1e-9)
    else:  # MNIST-1D: a real range test, then the default schedule's first LR
        assert finder.result.stop_reason != "explicit bounds"
        expected = type(finder.schedule)().build(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                                 finder.result.base_lr, finder.result.max_lr, steps_per_epoch=40,
                                                 total_steps=1)
        expected.step()
        assert lr == pytest.approx(expected.get_last_lr()[0], rel=1e-9)


def test_mnist1d_recipe_sweeps_four_schedules_and_compares():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["+recipe=mnist1d_compare"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params["+schedule"] == "constant,triangular2,sgdr,one_cycle"
    assert cfg.hydra.callbacks.compare._target_ == "lightning_clr.cli.compare.CompareRuns"
    assert {"snapshot", "flatness"} <= set(cfg.callbacks)


@pytest.mark.slow
def test_cli_finds_recipes_from_any_directory(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "lightning_clr.run", "+recipe=clr_cifar10", "data=fake_cifar10",
                           "--cfg", "job"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "_target_: lightning_clr.data.FakeCIFAR10DataModule" in proc.stdout
    assert "step_size: 2000" in proc.stdout and "_target_: lightning_clr.models.CaffeCifar10Full" in proc.stdout


def _write_cifar(folder: Path, per_file: int = 2) -> None:
    """A cifar-10-batches-py folder in the official format: pickled dicts of uint8 rows (R, G, B planes)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        data[0, :3] = (10, 20, 30)                # red plane, row 0, columns 0..2 of the file's first image
        data[0, 1024] = 40                        # green plane, pixel (0, 0)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [i, 9 - i][:per_file]}, f)


def test_cifar_files_are_read_without_torchvision(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=4)
    dm.setup()
    x, y = dm._train.tensors
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8 and len(dm._val) == 2
    assert x[0, 0, 0, :3].tolist() == [10, 20, 30] and x[0, 1, 0, 0].item() == 40
    assert y.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    normalized = dm.preprocess(x[:1], train=False)
    assert normalized[0, 0, 0, 0].item() == pytest.approx((10 / 255 - 0.4914) / 0.2470, rel=1e-6)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        CIFAR10DataModule(data_dir=str(tmp_path / "nowhere")).setup()


def test_crop_and_flip_move_pixels_only():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    flipped = random_crop_flip(x, crop=False)
    assert all(torch.equal(f, i) or torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x))
    cropped = random_crop_flip(x, pad=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = [[padded[n, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)] for n in range(6)]
    assert all(any(torch.equal(out, w) for w in windows[n]) for n, out in enumerate(cropped))
