"""Step time on one GPU in bf16: the default recipe with LRRangeTest vs plain Lightning + torch CyclicLR.

    python benchmarks/gpu_step_time.py                                    # GPU, bf16-mixed (a few minutes)
    python benchmarks/gpu_step_time.py --accelerator cpu --epochs 2 --pairs 1 --num-samples 1000   # smoke run

Both sides train the default recipe's model and data (``python -m lightning_clr.run``: 1-D CNN
+ SGD with momentum on MNIST-1D, batch 100, 40 steps per epoch) with the recipe's trainer
settings and ``trainer.accelerator``/``trainer.precision`` from the command line:

- **ours**: the recipe as the entry point builds it (``lightning_clr.run.build``) with
  ``+schedule=triangular``: the range test runs in ``on_fit_start`` and installs CLR
  (torch's ``CyclicLR``) between the bounds it found.
- **plain**: the same model, no LRRangeTest; ``configure_optimizers`` returns the same SGD and
  a ``CyclicLR`` configured by hand with ours' bounds and half cycle (2 epochs), stepped
  every optimizer step.

Loggers and the recipe's extra callbacks are off on both sides, so the only difference is how
the schedule got there. A step is the time between consecutive ``on_train_batch_end`` calls
(CUDA synchronised first), epochs after the first; each run gives its median step, the sides
alternate (A B, B A, ...) and the table shows the medians over the runs and the median of the
per-pair ratios, plus the range test's wall time (the whole ``on_fit_start`` of LRRangeTest).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.optim.lr_scheduler import CyclicLR

from lightning_clr.cli.main import build, config_dir
from lightning_clr.range_test import steps


class StepTimer(L.Callback):
    """Median time between consecutive ``on_train_batch_end`` calls, epochs after the first."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # validation runs between epochs: no step spans two of them

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self._last is not None and trainer.current_epoch >= 1:
            self.steps.append(now - self._last)
        self._last = now


class FitStartClock(L.Callback):
    """Wall time of the callbacks between two of these (placed before and after LRRangeTest)."""

    def __init__(self, marks: list[float]) -> None:
        self.marks = marks

    def on_fit_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())


def recipe(args: argparse.Namespace):
    """The default recipe's config with this benchmark's overrides."""
    overrides = [
        "+schedule=triangular", f"trainer.accelerator={args.accelerator}", f"trainer.precision={args.precision}",
        f"trainer.max_epochs={args.epochs}", f"data.num_samples={args.num_samples}", f"seed={args.seed}",
        "trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false", "~logger", "finder.progress_bar=false",
        f"output_dir={args.root}",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.callbacks = None  # no LearningRateMonitor, no gap logging: nothing the plain side lacks
    return cfg


def run_ours(cfg) -> tuple[float, float, tuple[float, float], int, str]:
    """``(median step, range-test seconds, bounds, steps per epoch, device)`` of the recipe with LRRangeTest."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer, model, datamodule, finder = build(cfg)
    timer, marks = StepTimer(), []
    at = trainer.callbacks.index(finder)
    trainer.callbacks[at:at + 1] = [FitStartClock(marks), finder, FitStartClock(marks)]
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else model.device.type
    result = finder.result
    return (statistics.median(timer.steps), marks[1] - marks[0], (result.base_lr, result.max_lr),
            steps.steps_per_epoch(trainer), device)


def run_plain(cfg, bounds: tuple[float, float], steps_per_epoch: int) -> float:
    """Median step of the same model with a hand-configured ``CyclicLR`` and no LRRangeTest."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)  # the model's YAML wires its shapes
    make_optimizer = model.configure_optimizers

    def configure_optimizers():
        optimizer = make_optimizer()
        scheduler = CyclicLR(optimizer, bounds[0], bounds[1], step_size_up=2 * steps_per_epoch,
                             cycle_momentum=False)  # as schedules.Triangular(step_epochs=2) builds it
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    model.configure_optimizers = configure_optimizers
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False)
    trainer.fit(model, datamodule=datamodule)
    return statistics.median(timer.steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accelerator", default="gpu", help="trainer.accelerator (default: gpu)")
    parser.add_argument("--precision", default="bf16-mixed", help="trainer.precision (default: bf16-mixed)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run; the first is not timed")
    parser.add_argument("--pairs", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D samples (80%% train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default="outputs/gpu_step_time", help="default_root_dir of the runs")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first epoch is not timed), got {args.epochs}")
    warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|litlogger).*")
    cfg = recipe(args)

    ours, plain, ratios, tests = [], [], [], []
    bounds = per_epoch = device = None
    for i in range(args.pairs):
        for side in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
            if side == "ours":
                step, seconds, bounds, per_epoch, device = run_ours(cfg)
                ours.append(step)
                tests.append(seconds)
            else:
                if bounds is None:  # the plain side needs ours' bounds: the first pair runs ours first
                    raise RuntimeError("internal: plain side ran before any range test")
                plain.append(run_plain(cfg, bounds, per_epoch))
        ratios.append(ours[-1] / plain[-1])

    print(f"\n## Step time: LRRangeTest + Triangular vs Lightning + CyclicLR ({device}, {args.precision})\n")
    print(f"{args.pairs} runs per side, {args.epochs} epochs of {per_epoch} steps, medians of per-run medians; "
          f"bounds {bounds[0]:.4g} .. {bounds[1]:.4g}\n")
    print("| side | step (ms) | ours / plain | range test (s) |")
    print("|---|---|---|---|")
    print(f"| ours: LRRangeTest + Triangular | {1e3 * statistics.median(ours):.3f} | "
          f"{statistics.median(ratios):.3f} | {statistics.median(tests):.2f} |")
    print(f"| plain: Lightning + CyclicLR | {1e3 * statistics.median(plain):.3f} | 1 | - |")


if __name__ == "__main__":
    main()
