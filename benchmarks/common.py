"""What the benchmarks share: the MNIST-1D task, the two model/optimizer pairs, one cheap
Lightning training loop, the two anchors' LR finders and the table printer.

Every training row runs through :func:`train`, so rows differ only in how they pick the
learning rate. A seed fixes the weights and the order of the batches: each row seeds
once, builds its model and trains, and an anchor's own search runs on a separate copy
built from the same seed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch import nn

from lightning_clr import LRRangeTest
from lightning_clr.data import MNIST1DDataModule
from lightning_clr.models import CNN1D, MLP, Classifier

BATCH_SIZE = 100


def setup() -> None:
    """One torch thread (the fastest setting for these small models, and the same numbers on
    any machine; ``OMP_NUM_THREADS=1`` for the processes it starts, unless set), no Lightning
    banners, no warnings a tiny in-memory data set triggers."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_clr"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # an anchor without a suggestion shows as "none" in the table instead of logging an error
    logging.getLogger("lightning.pytorch.tuner.lr_finder").setLevel(logging.CRITICAL)
    for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                    ".*LeafSpec.*", ".*LRRangeTest: .*", ".*litlogger.*"):
        warnings.filterwarnings("ignore", message=pattern)


def mnist1d(num_samples: int = 5000) -> MNIST1DDataModule:
    """MNIST-1D from ``make_dataset``: 80% train, 20% test (4000 / 1000 by default), batch 100."""
    dm = MNIST1DDataModule(num_samples=num_samples, train_split=0.8, batch_size=BATCH_SIZE)
    dm.setup()
    return dm


def steps_per_epoch(dm: MNIST1DDataModule) -> int:
    return len(dm.train_dataloader())


def header(title: str, dm: MNIST1DDataModule) -> str:
    """A benchmark's first lines: its title, the date, the machine and the MNIST-1D split."""
    return (f"# {title}\n\n{time.strftime('%Y-%m-%d')}, {machine()}; MNIST-1D {len(dm._train)} train / "
            f"{len(dm._val)} test, batch {dm.batch_size} ({steps_per_epoch(dm)} steps per epoch)\n")


@dataclass(frozen=True)
class Task:
    """A network and an optimizer; ``model(lr)`` builds both at a given constant LR.

    Attributes:
        name: label printed above the table.
        net: builds the network from the global RNG (seed first).
        optimizer: the torch optimizer class.
        options: its arguments other than ``lr``.
        nominal_lr: the LR handed to ``LRRangeTest`` models (the range test overwrites it).
        grid: the lowest and highest constant LR of the oracle's grid.
    """

    name: str
    net: Callable[[], nn.Module]
    optimizer: type[torch.optim.Optimizer]
    options: dict = field(default_factory=dict)
    nominal_lr: float = 0.1
    grid: tuple[float, float] = (1e-3, 1.0)

    def model(self, lr: float | None = None) -> Classifier:
        factory = partial(self.optimizer, lr=self.nominal_lr if lr is None else lr, **self.options)
        return Classifier(self.net(), factory, num_classes=10)


TASKS = {
    "cnn-sgd": Task("1-D CNN, SGD (momentum 0.9)", CNN1D, torch.optim.SGD, {"momentum": 0.9},
                    nominal_lr=0.1, grid=(1e-3, 1.0)),
    # AdamW's useful LRs sit a decade or two lower than SGD's: the grid is moved, not shortened
    "mlp-adamw": Task("MLP, AdamW (weight decay 0.01)", MLP, torch.optim.AdamW, {"weight_decay": 0.01},
                      nominal_lr=1e-3, grid=(1e-4, 1e-1)),
}


class ValAccuracy(L.Callback):
    """Records ``val/acc`` after every epoch (validation runs before ``on_train_epoch_end``)."""

    def __init__(self) -> None:
        self.accs: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.accs.append(float(trainer.callback_metrics["val/acc"]))


def trainer(epochs: int, root: Path | str, callbacks: Iterable[L.Callback] = (), **kwargs) -> L.Trainer:
    """The cheapest Trainer that still validates every epoch; ``kwargs`` override its settings."""
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
        "callbacks": list(callbacks),
    }
    settings.update(kwargs)
    return L.Trainer(**settings)


@dataclass
class Run:
    """One training: validation accuracy after each epoch and the LRs it used."""

    accs: list[float]
    base_lr: float
    max_lr: float
    fallback: str | None = None

    @property
    def final(self) -> float:
        return self.accs[-1]

    @property
    def best(self) -> float:
        return max(self.accs)

    def epochs_to(self, level: float) -> int | None:
        """The first epoch (1-based) whose accuracy is at least ``level``; None if never."""
        return next((i + 1 for i, a in enumerate(self.accs) if a >= level - 1e-9), None)


def train(task: Task, dm: MNIST1DDataModule, seed: int, epochs: int, root: Path | str, *,
          lr: float | None = None, finder: LRRangeTest | None = None) -> Run:
    """Seed, build ``task``'s model and fit it: at constant ``lr``, or under ``finder``."""
    if (lr is None) == (finder is None):
        raise ValueError("pass exactly one of lr (a constant LR) and finder (an LRRangeTest)")
    L.seed_everything(seed, verbose=False)
    model = task.model(lr)
    curve = ValAccuracy()
    trainer(epochs, root, [c for c in (finder, curve) if c is not None]).fit(model, datamodule=dm)
    if finder is None:
        return Run(curve.accs, lr, lr)
    assert finder.result is not None
    return Run(curve.accs, finder.result.base_lr, finder.result.max_lr, finder.result.fallback)


def range_curve(task: Task, dm: MNIST1DDataModule, seed: int, root: Path | str, **finder_kwargs):
    """``LRRangeTest``'s result for one seed (the fit after the range test is one epoch long)."""
    L.seed_everything(seed, verbose=False)
    model = task.model()
    finder = LRRangeTest(progress_bar=False, **finder_kwargs)
    trainer(1, root, [finder]).fit(model, datamodule=dm)
    return finder.result


# ----------------------------------------------------------------------------- the anchors


def lightning_lr(task: Task, dm: MNIST1DDataModule, seed: int, epochs: int, root: Path | str,
                 num_training: int = 100) -> float | None:
    """``Tuner.lr_find`` (1e-8 to 1, exponential, ``num_training`` steps) and its ``suggestion()``.

    The search runs in a Trainer with the training's ``max_epochs``, on a model built from
    ``seed``; the training then builds a fresh one from the same seed.
    """
    from lightning.pytorch.tuner import Tuner

    L.seed_everything(seed, verbose=False)
    model = task.model()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its own bar
        result = Tuner(trainer(epochs, root)).lr_find(model, datamodule=dm, num_training=num_training,
                                                         update_attr=False)
        return None if result is None else result.suggestion()


def torch_lr_finder_lr(task: Task, dm: MNIST1DDataModule, seed: int, num_iter: int = 100) -> float | None:
    """torch-lr-finder's ``range_test(end_lr=10, num_iter=100)`` and steepest-gradient suggestion.

    The optimizer starts at 1e-7, as in torch-lr-finder's README; the test runs on the
    plain model, optimizer and train loader.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    L.seed_everything(seed, verbose=False)
    model = task.model(1e-7)
    finder = LRFinder(model, model.configure_optimizers(), nn.CrossEntropyLoss(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(dm.train_dataloader(), end_lr=10, num_iter=num_iter)
        try:
            ax, lr = finder.plot(suggest_lr=True)
        except (RuntimeError, ValueError):  # too few points to suggest
            return None
    plt.close(ax.figure)
    return None if lr is None else float(lr)


# ----------------------------------------------------------------------------- tables


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def geo_mean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def machine() -> str:
    """CPU model, core count, torch threads and the torch and Lightning versions."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count()
    return (f"{model}, {cores} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
            f"lightning {L.__version__}")
