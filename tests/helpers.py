"""Small, fast building blocks shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch

from lightning_clr.data import SyntheticDataModule
from lightning_clr.models import MLP, Classifier


def tiny_data(**kwargs) -> SyntheticDataModule:
    """512 train / 256 val signals, batch 32: 16 steps per epoch."""
    return SyntheticDataModule(**kwargs)


def tiny_model(seed: int = 0, optimizer=None, hidden=(32,), **kwargs) -> Classifier:
    torch.manual_seed(seed)
    optimizer = optimizer or partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    return Classifier(MLP(40, 4, hidden=hidden), optimizer, num_classes=4, **kwargs)


def tiny_trainer(root: Path, **kwargs) -> L.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
    }
    settings.update(kwargs)
    return L.Trainer(**settings)


class LRRecorder(L.Callback):
    """Records the LR of every param group at the start of every training batch."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.momenta: list[float | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups
        self.lrs.append([g["lr"] for g in groups])
        self.momenta.append(groups[0].get("momentum", groups[0].get("betas", (None,))[0]))


def run_cli(args: list[str], cwd: Path, *, module: str = "lightning_clr.run", timeout: float = 900,
            **env: str) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a subprocess, as a user runs it: one thread, unbuffered output, no
    ``HYDRA_FULL_ERROR`` inherited; ``env`` adds variables. Every CLI subprocess of the tests starts here."""
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environ.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=timeout, check=False)


#: the benchmark scripts and their modules (not a package: each script puts its folder on sys.path)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_modules(*names: str) -> tuple:
    """Import the modules ``names`` of ``benchmarks/`` (and what they import from there), as the scripts do."""
    import importlib

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return tuple(importlib.import_module(name) for name in names)
    finally:
        sys.path.remove(str(BENCHMARKS))
