"""The range test's engine: real optimizer steps at rising LRs, then every trace undone.

:func:`run_sweep` trains on a private iterator over the train loader (cycled when an
epoch is shorter than the sweep), one point per optimizer step (``accumulate_grad_batches``
micro-batches each), through the module's own ``optimizer_step``, ``optimizer_zero_grad``
and ``on_before_zero_grad`` hooks and the strategy, so DDP, mixed precision, gradient
clipping, warm-up or clipping written in those hooks, and ``training_step`` behave as in
the real loop. The loss of each point is
the mean over all processes; stop and skip decisions are taken jointly by all ranks. A
:class:`~lightning_clr.range_test.restore.TrainingState` taken before is restored afterwards, the
global random generators are isolated, and anything ``training_step`` logs goes to a
scratch result collection, so the real epoch starts from the same state, the same RNG
draws and batch 0.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.seed import isolate_rng
from tqdm import tqdm

from lightning_clr._compat import (
    combined_loader,
    private_iterator,
    scratch_results,
    set_current_batch,
    set_sampler_epoch,
    validation_loaders,
)
from lightning_clr.range_test.lr_free import is_schedule_free, ready_to_sweep
from lightning_clr.range_test.readability import EXTEND, Decision
from lightning_clr.range_test.restore import TrainingState
from lightning_clr.range_test.result import RangeTestError

#: divergence compares the median of the last this-many raw losses (or 5% of the sweep) with its best
MEDIAN_WINDOW = 5



@dataclass
class SweepRecord:
    """What a sweep recorded.

    Attributes:
        lrs: the LR of the first param group at each recorded point.
        raw: the loss at each point (mean over processes).
        smooth: the bias-corrected moving average of ``raw``.
        stop: ``"completed"``, ``"diverged"``, ``"non-finite loss"`` or ``"too many skipped steps"``.
        skipped: steps not recorded (a gradient scaler skipped the update, or
            ``training_step`` returned ``None``).
        extended: how many times ``more`` continued the sweep past its planned LRs.
    """

    lrs: list[float]
    raw: list[float]
    smooth: list[float]
    stop: str
    skipped: int
    extended: int = 0


def sweep_lrs(start_lr: float, end_lr: float, num_steps: int, mode: str) -> list[float]:
    """The LR at each of ``num_steps`` sweep steps, from ``start_lr`` to ``end_lr`` inclusive.

    Both ends are exact (not rounded by the spacing's arithmetic): a user's ``end_lr`` is a
    ceiling the sweep reaches and never passes.
    """
    if num_steps == 1:
        return [start_lr]
    fractions = [i / (num_steps - 1) for i in range(1, num_steps - 1)]
    if mode == "exponential":
        inner = [start_lr * (end_lr / start_lr) ** f for f in fractions]
    else:
        inner = [start_lr + (end_lr - start_lr) * f for f in fractions]
    return [start_lr, *inner, end_lr]


def check_record(record: SweepRecord, start_lr: float) -> None:
    """Raise :class:`~lightning_clr.range_test.result.RangeTestError` for a sweep that recorded no point."""
    if not record.lrs and record.stop == "too many skipped steps":
        raise RangeTestError(
            f"all {record.skipped} range-test steps were skipped: training_step returned None, or the gradient "
            "scaler found inf/NaN gradients at every step. Return the loss from training_step, or train with "
            "precision='bf16-mixed', which needs no scaler."
        )
    if not record.lrs:
        raise RangeTestError(
            f"the loss was not finite at the first range-test step (lr={start_lr:g}): the model or the data "
            "produce NaN/inf before any real update. Check the inputs and the loss, or lower start_lr."
        )


def run_sweep(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    targets: list[float],
    *,
    ema_beta: float,
    divergence_threshold: float | None,
    progress_bar: bool = True,
    more: Callable[[list[float], list[float], int], Decision] | None = None,
    val_batches: list[Any] | None = None,
) -> SweepRecord:
    """Train one optimizer step at each LR of ``targets``, record the loss, then undo it all.

    Args:
        trainer: a Trainer inside ``fit`` whose optimizers exist (``on_fit_start`` or later).
        pl_module: its LightningModule.
        optimizer: the optimizer to drive; param group ``g`` gets ``lr * ratios[g]``.
        ratios: each param group's LR relative to the first one.
        targets: the LR of each sweep step (see :func:`sweep_lrs`).
        ema_beta: ``beta`` of the moving average ``avg = beta * avg + (1 - beta) * loss``,
            bias-corrected by ``1 - beta**(k+1)``.
        divergence_threshold: stop once the running median of the loss (over the last 5
            points, or 5% of the sweep) exceeds this multiple of its lowest value; ``None``
            never stops early (a non-finite loss always does).
        progress_bar: show a progress bar on rank zero when the Trainer shows one.
        more: called as ``more(lrs, smoothed, extended)`` when the planned LRs are done and the
            sweep did not stop (:func:`~lightning_clr.range_test.readability.decide`); the LRs of
            an ``extend`` decision are swept next (rank zero's, on every rank).
        val_batches: batches (on the device) whose mean loss after each step is the curve's
            point instead of the training loss (see :func:`held_out_batches`).

    Returns:
        The recorded :class:`SweepRecord`; model, optimizer, scaler, metrics and RNG are as before.
    """
    loaders = train_loaders(trainer)
    strategy = trainer.strategy
    scaler = getattr(strategy.precision_plugin, "scaler", None)
    old_schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
    state = TrainingState.take(pl_module, [optimizer], old_schedulers, scaler, loaders)
    pl_module.train()
    if is_schedule_free(optimizer):
        ready_to_sweep(optimizer)  # undone by the restore: the state dict holds the mode and the warm-up
    try:
        with isolate_rng(), scratch_results(trainer, pl_module):
            return _sweep(trainer, pl_module, optimizer, ratios, list(targets), loaders, scaler, ema_beta,
                          divergence_threshold, progress_bar, more, val_batches or [])
    finally:
        state.restore(pl_module, [optimizer], old_schedulers, scaler)


def train_loaders(trainer: L.Trainer) -> list[Any]:
    """The fit's train loaders as Lightning wrapped them (distributed sampler, ``limit_train_batches``)."""
    combined = combined_loader(trainer)
    if combined is None:
        raise MisconfigurationException(
            "LRRangeTest found no train dataloader (or limit_train_batches=0); the range test needs training data."
        )
    return list(combined.flattened)


def batch_stream(trainer: L.Trainer, loaders: list[Any], *, cycle: bool = True) -> Iterator[tuple[Any, int]]:
    """``(batch, batch_idx)`` on the device, from private iterators: endless, restarting exhausted loaders,
    or one pass when ``cycle`` is false."""
    if len(loaders) > 1:
        from lightning.pytorch.utilities.combined_loader import CombinedLoader

        combined = CombinedLoader(combined_loader(trainer).iterables, "max_size_cycle")
        make = lambda: (b for b, _, _ in iter(combined))
    else:
        loader = loaders[0]
        # a persistent-worker loader hands out one shared iterator; the epoch's own must stay untouched
        make = lambda: private_iterator(loader)
    index, passes = 0, 0
    while True:
        empty = True
        for batch in make():
            empty = False
            yield trainer.strategy.batch_to_device(batch), index
            index += 1
        if empty:
            raise MisconfigurationException("LRRangeTest: the train dataloader yielded no batch.")
        if not cycle:
            return
        # a distributed sampler deals the same order until told the epoch: reshuffle each pass, as a
        # single process's random sampler does (the fit loop sets the real epoch before every epoch)
        passes += 1
        for each in loaders:
            set_sampler_epoch(each, passes)


def _sweep(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    targets: list[float],
    loaders: list[Any],
    scaler: Any,
    beta: float,
    threshold: float | None,
    progress_bar: bool,
    more: Callable[[list[float], list[float], int], Decision] | None,
    val_batches: list[Any],
) -> SweepRecord:
    strategy = trainer.strategy
    epoch = trainer.current_epoch
    # the module's optimizer_step hook gets the LightningOptimizer, as in the fit loop
    wrapped = next(o for o in _as_list(pl_module.optimizers()) if o.optimizer is optimizer)
    accumulate = trainer.accumulate_grad_batches
    block_sync = getattr(strategy, "block_backward_sync", None)
    batches = batch_stream(trainer, loaders)

    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg, best, skipped, stop, extended = 0.0, math.inf, 0, "completed", 0
    window = max(MEDIAN_WINDOW, len(targets) // 20)
    show = progress_bar and trainer.is_global_zero and trainer.progress_bar_callback is not None
    bar = tqdm(total=len(targets), desc="LR range test", disable=not show, leave=False, file=sys.stderr,
               dynamic_ncols=True)
    step = 0
    while True:
        if step >= len(targets):
            if more is None or not _extend(strategy, targets, more, lrs, smooth, extended):
                break
            extended += 1
            bar.total = len(targets)
            bar.refresh()
        lr = targets[step]
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        micro = [next(batches) for _ in range(accumulate)]
        first: list[torch.Tensor | None] = []  # the loss before the update, as optimizer.step(closure) returns it

        def closure(micro=micro, first=first) -> torch.Tensor | None:  # bound now: called in this step only
            pl_module.on_before_zero_grad(optimizer)
            pl_module.optimizer_zero_grad(epoch, micro[0][1], optimizer)
            total, count = None, 0
            for j, (batch, idx) in enumerate(micro):
                set_current_batch(trainer, batch)
                last = j == len(micro) - 1
                with block_sync() if (block_sync is not None and not last) else nullcontext():
                    loss = training_loss(strategy.training_step(batch, idx), need_grad=True)
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
        # the module's hook (default: optimizer.step(closure)); the loss is read from the closure
        pl_module.optimizer_step(epoch, micro[-1][1], wrapped, closure)
        loss = first[0] if first else None
        if val_batches and loss is not None:  # the point on the curve is the held-out loss after this step
            loss = _held_out_loss(strategy, pl_module, val_batches)
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
            if len(raw) >= window:  # divergence is read off a running median: one noisy batch cannot end the sweep
                best = min(best, statistics.median(raw[-window:]))
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smoothed:.4f}")
        diverged = (finite and threshold is not None and len(raw) > window
                    and statistics.median(raw[-window:]) > threshold * best)
        if strategy.reduce_boolean_decision(not finite or diverged, all=False):
            stop = "non-finite loss" if not finite else "diverged"
            break
        step += 1
    bar.close()
    return SweepRecord(lrs, raw, smooth, stop, skipped, extended)


def _extend(strategy: Any, targets: list[float], more: Callable[..., Decision], lrs: list[float],
            smooth: list[float], extended: int) -> bool:
    """Append rank zero's extension of the sweep to ``targets``; whether there is one."""
    decision = more(lrs, smooth, extended)
    extra = strategy.broadcast(list(decision.lrs) if decision.action == EXTEND else [], src=0)
    targets.extend(extra)
    return bool(extra)


def _held_out_loss(strategy: Any, pl_module: L.LightningModule, batches: list[Any]) -> torch.Tensor | None:
    """Mean ``training_step`` loss on fixed validation batches, without gradients, in eval mode
    (``None`` when ``training_step`` returned ``None`` for all of them)."""
    pl_module.eval()
    try:
        with torch.no_grad():
            losses = [training_loss(strategy.training_step(batch, i), need_grad=False) for i, batch in enumerate(batches)]
        kept = [loss.detach().float() for loss in losses if loss is not None]
        return torch.stack(kept).mean() if kept else None
    finally:
        pl_module.train()


def training_loss(out: Any, *, need_grad: bool) -> torch.Tensor | None:
    """The loss in what ``training_step`` returned (``None``: skip the step), checked as the sweep needs it.

    Args:
        out: ``training_step``'s return value: a tensor, a mapping with a ``"loss"`` tensor, or ``None``.
        need_grad: whether the loss must carry a graph to backpropagate through.

    Raises:
        MisconfigurationException: a loss the sweep cannot train on (a Python number, a detached
            tensor, a mapping without ``"loss"``); one line naming ``training_step`` and the fix.
    """
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise MisconfigurationException(
                f"LRRangeTest: training_step returned a dict without a 'loss' key (keys {sorted(map(str, out))}); "
                "put the loss tensor under 'loss', or return it alone."
            )
        out = out["loss"]
    if out is None:
        return None
    if not isinstance(out, torch.Tensor):
        raise MisconfigurationException(
            f"LRRangeTest: training_step returned a {type(out).__name__} ({out!r}), not a tensor, so the range test "
            "cannot backpropagate through it; return the loss tensor itself (not loss.item() or float(loss))."
        )
    if need_grad and not out.requires_grad:
        raise MisconfigurationException(
            "LRRangeTest: the loss training_step returned does not require grad (computed under torch.no_grad(), "
            "detached, or from frozen parameters only), so no step can train; return the loss with its graph: "
            "no .detach() or torch.no_grad() around it."
        )
    return out


def held_out_batches(trainer: L.Trainer, count: int) -> list[Any]:
    """The first ``count`` batches of the first validation loader, on the device.

    Raises:
        MisconfigurationException: the fit has no validation batch (no loader, an empty one, or
            ``limit_val_batches=0``); one line naming ``metric`` and the fix.
    """
    if trainer.limit_val_batches == 0:
        _no_validation(f"limit_val_batches={trainer.limit_val_batches!r}")
    loaders = validation_loaders(trainer)
    if not loaders:
        _no_validation("the fit has no validation loader")
    batches = []
    for batch in private_iterator(loaders[0]):
        batches.append(trainer.strategy.batch_to_device(batch))
        if len(batches) == count:
            break
    if not batches:
        _no_validation("the validation loader yielded no batch")
    return batches


def _no_validation(cause: str) -> None:
    raise MisconfigurationException(
        f"LRRangeTest(metric='val_loss') needs validation data, but {cause}; give it validation batches "
        "(val_dataloaders, or a datamodule with val_dataloader, and limit_val_batches > 0), or set metric='train_loss'."
    )


def _as_list(optimizers: Any) -> list[Any]:
    return optimizers if isinstance(optimizers, list) else [optimizers]
