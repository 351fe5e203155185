"""The range test's engine: real optimizer steps at rising LRs, then every trace undone.

:func:`run_sweep` trains on a private iterator over the train loader (cycled when an
epoch is shorter than the sweep), one point per optimizer step (``accumulate_grad_batches``
micro-batches each), through the strategy, so DDP, mixed precision, gradient clipping and
the module's own ``training_step`` behave as in the real loop. The loss of each point is
the mean over all processes; stop and skip decisions are taken jointly by all ranks. A
:class:`~lightning_clr.snapshot.TrainingSnapshot` taken before is restored afterwards, and
anything ``training_step`` logs goes to a scratch result collection, so the real epoch
starts from the same state, the same RNG draws and batch 0.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader
from tqdm import tqdm

from lightning_clr.snapshot import TrainingSnapshot

SWEEP_MODES = ("exponential", "linear")


@dataclass
class Curve:
    """What a sweep recorded.

    Attributes:
        lrs: the LR of the first param group at each recorded point.
        raw: the loss at each point (mean over processes).
        smooth: the bias-corrected moving average of ``raw``.
        stop: ``"completed"``, ``"diverged"``, ``"non-finite loss"`` or ``"too many skipped steps"``.
        skipped: steps not recorded (a gradient scaler skipped the update, or
            ``training_step`` returned ``None``).
    """

    lrs: list[float]
    raw: list[float]
    smooth: list[float]
    stop: str
    skipped: int


def sweep_lrs(min_lr: float, max_lr: float, num_steps: int, mode: str) -> list[float]:
    """The LR at each of ``num_steps`` sweep steps, from ``min_lr`` to ``max_lr`` inclusive."""
    if num_steps == 1:
        return [min_lr]
    fractions = [i / (num_steps - 1) for i in range(num_steps)]
    if mode == "exponential":
        return [min_lr * (max_lr / min_lr) ** f for f in fractions]
    return [min_lr + (max_lr - min_lr) * f for f in fractions]


def run_sweep(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    targets: list[float],
    *,
    smoothing: float,
    divergence_threshold: float | None,
    progress_bar: bool = True,
) -> Curve:
    """Train one optimizer step at each LR of ``targets``, record the loss, then undo it all.

    Args:
        trainer: a Trainer inside ``fit`` whose optimizers exist (``on_fit_start`` or later).
        pl_module: its LightningModule.
        optimizer: the optimizer to drive; param group ``g`` gets ``lr * ratios[g]``.
        ratios: each param group's LR relative to the first one.
        targets: the LR of each sweep step (see :func:`sweep_lrs`).
        smoothing: ``beta`` of the moving average ``avg = beta * avg + (1 - beta) * loss``,
            bias-corrected by ``1 - beta**(k+1)``.
        divergence_threshold: stop once the smoothed loss exceeds this multiple of its
            lowest value; ``None`` never stops early (a non-finite loss always does).
        progress_bar: show a progress bar on rank zero when the Trainer shows one.

    Returns:
        The recorded :class:`Curve`; model, optimizer, scaler, metrics and RNG are as before.
    """
    loaders = _train_loaders(trainer)
    strategy = trainer.strategy
    scaler = getattr(strategy.precision_plugin, "scaler", None)
    old_schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
    snapshot = TrainingSnapshot.take(pl_module, [optimizer], old_schedulers, scaler, loaders)

    results = trainer.fit_loop.epoch_loop._results
    logger_state = (trainer._logger_connector._current_fx, trainer._logger_connector._first_loop_iter)
    fx_name = pl_module._current_fx_name
    trainer.fit_loop.epoch_loop._results = _ResultCollection(training=True).to(pl_module.device)
    pl_module._current_fx_name = "training_step"
    pl_module.train()
    try:
        return _sweep(trainer, optimizer, ratios, targets, loaders, scaler, smoothing, divergence_threshold,
                      progress_bar)
    finally:
        trainer.fit_loop.epoch_loop._results = results
        trainer._logger_connector._current_fx, trainer._logger_connector._first_loop_iter = logger_state
        pl_module._current_fx_name = fx_name
        snapshot.restore(pl_module, [optimizer], old_schedulers, scaler)


def _train_loaders(trainer: L.Trainer) -> list[Any]:
    trainer.fit_loop.setup_data()
    combined = trainer.fit_loop._combined_loader
    if combined is None:
        raise MisconfigurationException(
            "LRRangeTest found no train dataloader (or limit_train_batches=0); the range test needs training data."
        )
    return list(combined.flattened)


def _batches(trainer: L.Trainer, loaders: list[Any]) -> Iterator[tuple[Any, int]]:
    """Endless ``(batch, batch_idx)`` stream on private iterators, restarting exhausted loaders."""
    if len(loaders) > 1:
        from lightning.pytorch.utilities.combined_loader import CombinedLoader

        combined = CombinedLoader(trainer.fit_loop._combined_loader.iterables, "max_size_cycle")
        make = lambda: (b for b, _, _ in iter(combined))
    else:
        loader = loaders[0]
        # a persistent-worker loader hands out one shared iterator; the epoch's own must stay untouched
        private = isinstance(loader, DataLoader) and loader.persistent_workers and loader.num_workers > 0
        make = (lambda: loader._get_iterator()) if private else (lambda: iter(loader))
    index, passes = 0, 0
    while True:
        empty = True
        for batch in make():
            empty = False
            yield trainer.strategy.batch_to_device(batch), index
            index += 1
        if empty:
            raise MisconfigurationException("LRRangeTest: the train dataloader yielded no batch.")
        # a distributed sampler deals the same order until told the epoch: reshuffle each pass, as a
        # single process's random sampler does (the fit loop sets the real epoch before every epoch)
        passes += 1
        for each in loaders:
            _set_sampler_epoch(each, passes)


def _sweep(
    trainer: L.Trainer,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    targets: list[float],
    loaders: list[Any],
    scaler: Any,
    beta: float,
    threshold: float | None,
    progress_bar: bool,
) -> Curve:
    strategy = trainer.strategy
    accumulate = trainer.accumulate_grad_batches
    block_sync = getattr(strategy, "block_backward_sync", None)
    batches = _batches(trainer, loaders)

    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg, best, skipped, stop = 0.0, math.inf, 0, "completed"
    show = progress_bar and trainer.is_global_zero and trainer.progress_bar_callback is not None
    bar = tqdm(total=len(targets), desc="LR range test", disable=not show, leave=False, file=sys.stderr,
               dynamic_ncols=True)
    step = 0
    while step < len(targets):
        lr = targets[step]
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        micro = [next(batches) for _ in range(accumulate)]
        first: list[torch.Tensor | None] = []  # the loss before the update, as optimizer.step(closure) returns it

        def closure() -> torch.Tensor | None:
            optimizer.zero_grad(set_to_none=True)
            total, count = None, 0
            for j, (batch, idx) in enumerate(micro):
                trainer.fit_loop.epoch_loop._results.batch = batch
                last = j == len(micro) - 1
                with block_sync() if (block_sync is not None and not last) else nullcontext():
                    out = strategy.training_step(batch, idx)
                    loss = out["loss"] if isinstance(out, dict) else out
                    if loss is None:
                        continue
                    strategy.backward(loss / len(micro), optimizer)
                total = loss.detach() if total is None else total + loss.detach()
                count += 1
            result = None if total is None else total / count
            if not first:
                first.append(result)
            return result

        scale = scaler.get_scale() if scaler is not None else None
        # with a gradient scaler Lightning returns the optimizer's step output (None), not the loss
        strategy.optimizer_step(optimizer, closure)
        loss = first[0] if first else None
        # decided alike on every rank, so that the reduce below runs on all of them or on none
        skip = strategy.reduce_boolean_decision(loss is None, all=False)
        value = math.nan if skip else float(strategy.reduce(loss.detach().float(), reduce_op="mean"))
        finite = math.isfinite(value)
        # a scaler that backed off found inf/NaN gradients and skipped the update: no point on the
        # curve and no stop (a non-finite loss itself still stops the sweep)
        skip = skip or (finite and scaler is not None and scaler.get_scale() < scale)
        if skip:
            skipped += 1
            if skipped > len(targets):
                stop = "too many skipped steps"
                break
            continue
        if finite:
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (len(lrs) + 1))
            lrs.append(lr)
            raw.append(value)
            smooth.append(smoothed)
            best = min(best, smoothed)
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smoothed:.4f}")
        diverged = finite and threshold is not None and len(lrs) > 1 and smoothed > threshold * best
        if strategy.reduce_boolean_decision(not finite or diverged, all=False):
            stop = "non-finite loss" if not finite else "diverged"
            break
        step += 1
    bar.close()
    return Curve(lrs, raw, smooth, stop, skipped)
