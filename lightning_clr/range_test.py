"""The LR range test (Smith 2017, arXiv 1506.01186, section 3.3) as a Lightning callback.

Before the first epoch, :class:`LRRangeTest` trains for ``num_steps`` optimizer steps
while raising the learning rate from ``min_lr`` to ``max_lr``, records the loss
(averaged over all processes, smoothed by a bias-corrected moving average), stops
when the loss diverges, puts model, optimizer and random generators back exactly as
they were, reads a pair of bounds off the curve, and installs a cyclical schedule
between them as a per-step ``LRSchedulerConfig``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.types import LRSchedulerConfig
from torch.utils.data import DataLoader
from tqdm import tqdm
from typing_extensions import override

from lightning_clr import schedules as _schedules
from lightning_clr.logging import log_range_test
from lightning_clr.selection import RULES, select_bounds
from lightning_clr.snapshot import TrainingSnapshot

SWEEP_MODES = ("exponential", "linear")


class RangeTestError(RuntimeError):
    """The range test could not produce a usable curve (e.g. NaN loss at the first step)."""


@dataclass
class RangeTestResult:
    """What the range test measured and chose.

    Attributes:
        lrs: the LR of the first param group at each recorded step.
        losses: the bias-corrected smoothed loss at each step (mean over processes).
        raw_losses: the unsmoothed loss at each step.
        base_lr: the selected lower bound (first param group).
        max_lr: the selected upper bound (first param group).
        rule: the selection rule that chose the bounds.
        stop_reason: why the sweep ended: ``"completed"``, ``"diverged"``,
            ``"non-finite loss"``, ``"too many skipped steps"``, or ``"explicit bounds"``
            when no sweep ran.
        fallback: ``None`` if the rule read the bounds off the curve, else why a
            documented fallback was used.
        group_ratios: each param group's LR divided by the first group's; the
            schedule keeps these ratios.
        skipped_steps: sweep steps not recorded: the gradient scaler skipped the update
            (inf/NaN gradients, e.g. with ``precision="16-mixed"``) or ``training_step``
            returned ``None``. The same LR is tried again on the next batch.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    base_lr: float
    max_lr: float
    rule: str
    stop_reason: str
    fallback: str | None = None
    group_ratios: list[float] = field(default_factory=lambda: [1.0])
    skipped_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RangeTestResult:
        return cls(**state)


def sweep_lrs(min_lr: float, max_lr: float, num_steps: int, mode: str) -> list[float]:
    """The LR at each of ``num_steps`` sweep steps, from ``min_lr`` to ``max_lr`` inclusive."""
    if num_steps == 1:
        return [min_lr]
    fractions = [i / (num_steps - 1) for i in range(num_steps)]
    if mode == "exponential":
        return [min_lr * (max_lr / min_lr) ** f for f in fractions]
    return [min_lr + (max_lr - min_lr) * f for f in fractions]


class LRRangeTest(Callback):
    """Runs an LR range test at the start of ``fit`` and trains with a schedule between its bounds.

    Args:
        schedule: the schedule to install between the found bounds (a spec from
            :mod:`lightning_clr.schedules`); ``None`` means :class:`~lightning_clr.schedules.Constant`.
        min_lr: the LR of the first sweep step.
        max_lr: the LR of the last sweep step.
        num_steps: optimizer steps in the sweep (one point each). The sweep cycles the
            train loader if an epoch is shorter and ignores ``max_epochs`` and
            ``limit_train_batches``.
        mode: ``"exponential"`` (evenly spaced in log LR, as fastai) or ``"linear"``
            (as Smith's paper).
        smoothing: weight ``beta`` of the moving average of the loss,
            ``avg = beta * avg + (1 - beta) * loss``, bias-corrected by ``1 - beta**(k+1)``.
        divergence_threshold: stop once the smoothed loss exceeds this multiple of
            its lowest value. ``None`` never stops early (non-finite losses still stop).
        rule: bound-selection rule, one of :data:`lightning_clr.selection.RULES`.
        bounds: ``(base_lr, max_lr)`` to use instead of running the sweep.
        enabled: ``False`` says that no range test may run: ``bounds`` are then required.
        replace_scheduler: a scheduler returned by ``configure_optimizers`` is
            replaced (with a warning) when ``True``; when ``False`` its presence is an error.
        progress_bar: show a progress bar of the sweep (when the Trainer shows one).

    Raises:
        ValueError: for a setting out of range; the message names the value and the fix.

    On ``fit(ckpt_path=...)`` the bounds come from the checkpoint (no new range test) and
    Lightning restores the schedule's step, so the LR continues exactly where it stopped.
    Before the sweep the schedule is built once against the Trainer's step counts, so a
    schedule that cannot run (e.g. ``OneCycle`` without ``max_epochs``/``max_steps``)
    fails before any training.

    Example::

        import lightning as L
        from lightning_clr import LRRangeTest, schedules

        finder = LRRangeTest(schedule=schedules.SGDR(cycle_epochs=1, cycle_mult=2))
        trainer = L.Trainer(max_epochs=7, callbacks=[finder])
        trainer.fit(model)
        print(finder.result.base_lr, finder.result.max_lr)
    """

    def __init__(
        self,
        schedule: _schedules.Schedule | None = None,
        min_lr: float = 1e-3,
        max_lr: float = 1.0,
        num_steps: int = 100,
        mode: str = "exponential",
        smoothing: float = 0.5,
        divergence_threshold: float | None = 4.0,
        rule: str = "smith",
        bounds: tuple[float, float] | None = None,
        replace_scheduler: bool = True,
        progress_bar: bool = True,
        enabled: bool = True,
    ) -> None:
        if mode not in SWEEP_MODES:
            raise ValueError(f"mode must be one of {SWEEP_MODES}, got {mode!r}")
        if not min_lr > 0:
            raise ValueError(f"min_lr must be > 0, got {min_lr}; a sweep starts at a small positive LR such as 1e-5")
        if not max_lr > min_lr:
            raise ValueError(f"max_lr ({max_lr}) must exceed min_lr ({min_lr}); widen the sweep, e.g. max_lr=10")
        if num_steps < 10:
            raise ValueError(f"num_steps must be >= 10 to read a curve, got {num_steps}; 100 is a good default")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}; 0.5 is the default")
        if divergence_threshold is not None and not divergence_threshold > 1:
            raise ValueError(f"divergence_threshold must be > 1 (or None), got {divergence_threshold}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
        if bounds is not None:
            base, top = (float(b) for b in bounds)
            if not 0 < base <= top:
                raise ValueError(f"bounds must satisfy 0 < base_lr <= max_lr, got base_lr={base}, max_lr={top}")
            bounds = (base, top)
        if not enabled and bounds is None:
            raise ValueError(
                "enabled=False skips the range test and needs bounds=(base_lr, max_lr); pass them or set enabled=True"
            )
        if schedule is not None and not isinstance(schedule, _schedules.Schedule):
            raise TypeError(f"schedule must be a lightning_clr.schedules spec, got {type(schedule).__name__}")
        self._schedule = schedule if schedule is not None else _schedules.Constant()
        self._min_lr, self._max_lr, self._num_steps = float(min_lr), float(max_lr), int(num_steps)
        self._mode, self._beta, self._threshold = mode, float(smoothing), divergence_threshold
        self._rule, self._bounds = rule, bounds
        self._replace_scheduler, self._progress_bar = replace_scheduler, progress_bar
        self.result: RangeTestResult | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._restored = False
        self._total_steps: int | None = None
        self._checkpoint_plan: dict[str, Any] = {}

    @property
    def schedule(self) -> _schedules.Schedule:
        return self._schedule

    @property
    def restored(self) -> bool:
        """Whether this fit took its bounds from a checkpoint instead of running the range test."""
        return self._restored

    # ------------------------------------------------------------------ hooks

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise MisconfigurationException(
                "LRRangeTest drives the optimizer itself and needs automatic optimization; "
                "set `self.automatic_optimization = True` or remove the callback."
            )
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException(
                f"LRRangeTest needs exactly one optimizer, configure_optimizers returned {len(trainer.optimizers)}."
            )
        optimizer = trainer.optimizers[0]
        if trainer.lr_scheduler_configs and not self._replace_scheduler:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            raise MisconfigurationException(
                f"configure_optimizers returned a scheduler ({names}) and replace_scheduler=False; "
                "remove that scheduler or set replace_scheduler=True to let LRRangeTest install its schedule."
            )
        ratios = self._group_ratios(optimizer)
        per_epoch, total = self._step_counts(trainer)
        restored = self._restored and self.result is not None
        bounds = (self.result.base_lr, self.result.max_lr) if restored else self._bounds
        # build the schedule once now, so that a schedule that cannot run fails before the sweep
        problem = self._try_build(optimizer, ratios, bounds or (self._min_lr, self._max_lr), per_epoch, total)
        if problem is not None:
            raise MisconfigurationException(f"LRRangeTest: {problem}")

        if restored:
            self._check_resume(optimizer, ratios, per_epoch, total)
            rank_zero_info(
                f"LRRangeTest: resuming with base_lr={self.result.base_lr:.4g}, max_lr={self.result.max_lr:.4g} "
                "from the checkpoint (no new range test)."
            )
        elif self._bounds is not None:
            base, top = self._bounds
            self.result = RangeTestResult([], [], [], base, top, "explicit", "explicit bounds", group_ratios=ratios)
        else:
            self.result = self._run(trainer, pl_module, optimizer, ratios)
            log_range_test(trainer, self.result)
        self._install(trainer, optimizer, self.result)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a checkpoint's state, if any, is loaded after this hook
            self._restored = False

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {}
        # plain numbers and strings only: the checkpoint loads with torch.load(weights_only=True)
        plan = {"schedule": _describe(self._schedule), "total_steps": self._total_steps}
        return {"result": self.result.to_dict(), **plan}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "result" in state_dict:
            self.result = RangeTestResult.from_dict(state_dict["result"])
            self._checkpoint_plan = {k: state_dict[k] for k in ("schedule", "total_steps") if k in state_dict}
            self._restored = True

    # ------------------------------------------------------------------ resume

    def _try_build(
        self,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
        bounds: tuple[float, float],
        per_epoch: int,
        total: int | None,
    ) -> str | None:
        """Build the schedule on ``optimizer`` and undo it; the spec's complaint, or ``None`` if it builds."""
        saved = [dict(group) for group in optimizer.param_groups]
        try:
            self._schedule.build(
                optimizer, [bounds[0] * r for r in ratios], [bounds[1] * r for r in ratios],
                steps_per_epoch=per_epoch, total_steps=total,
            )
        except ValueError as err:
            return str(err)
        finally:
            for group, before in zip(optimizer.param_groups, saved):
                group.clear()
                group.update(before)
        return None

    def _check_resume(
        self, optimizer: torch.optim.Optimizer, ratios: list[float], per_epoch: int, total: int | None
    ) -> None:
        """Refuse a resume whose schedule would not continue the checkpoint's exactly."""
        name = type(self._schedule).__name__
        saved = self._checkpoint_plan.get("schedule")
        if saved is not None and saved != _describe(self._schedule):
            was = f"{saved['spec']}({', '.join(f'{k}={v!r}' for k, v in saved.items() if k != 'spec')})"
            raise MisconfigurationException(
                f"LRRangeTest: the checkpoint trained with {was} but this run configures {self._schedule!r}; "
                "the checkpoint's scheduler state would silently win. Resume with the checkpoint's schedule "
                "settings, or start a new run without ckpt_path."
            )
        assert self.result is not None
        trained = (self.result.base_lr, self.result.max_lr)
        if self._bounds is not None and self._bounds != trained:
            raise MisconfigurationException(
                f"LRRangeTest: the checkpoint trained between base_lr={trained[0]:g} and max_lr={trained[1]:g} but "
                f"this run asks for bounds={self._bounds}; resume without bounds (or with the same ones), "
                "or start a new run without ckpt_path."
            )
        planned = self._checkpoint_plan.get("total_steps", total)
        if planned != total and self._try_build(optimizer, ratios, (1.0, 2.0), per_epoch, None) is not None:
            raise MisconfigurationException(
                f"LRRangeTest: {name} spans the whole run, which the checkpoint planned as {planned} optimizer "
                f"steps, but this run has {total}; resume with the same trainer.max_epochs / max_steps, "
                "or start a new run without ckpt_path."
            )

    # ------------------------------------------------------------------ sweep

    def _group_ratios(self, optimizer: torch.optim.Optimizer) -> list[float]:
        first = optimizer.param_groups[0]["lr"]
        if not first > 0:
            raise MisconfigurationException(
                f"the first param group's lr is {first}; LRRangeTest keeps the groups' LR ratios relative to it, "
                "so it must be > 0."
            )
        return [g["lr"] / first for g in optimizer.param_groups]

    def _run(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
    ) -> RangeTestResult:
        loaders = self._train_loaders(trainer)
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
            lrs, raw, smooth, stop, skipped = self._sweep(trainer, pl_module, optimizer, ratios, loaders, scaler)
        finally:
            trainer.fit_loop.epoch_loop._results = results
            trainer._logger_connector._current_fx, trainer._logger_connector._first_loop_iter = logger_state
            pl_module._current_fx_name = fx_name
            snapshot.restore(pl_module, [optimizer], old_schedulers, scaler)

        if not lrs and stop == "too many skipped steps":
            raise RangeTestError(
                f"all {skipped} range-test steps were skipped: training_step returned None, or the gradient scaler "
                "found inf/NaN gradients at every step. Return the loss from training_step, or train with "
                "precision='bf16-mixed', which needs no scaler."
            )
        if not lrs:
            raise RangeTestError(
                f"the loss was not finite at the first range-test step (lr={self._min_lr:g}): the model or the data "
                "produce NaN/inf before any real update. Check the inputs and the loss, or lower min_lr."
            )
        bounds = select_bounds(lrs, smooth, rule=self._rule)
        if bounds.fallback:
            rank_zero_warn(f"LRRangeTest: {bounds.fallback}")
        result = RangeTestResult(
            lrs=lrs,
            losses=smooth,
            raw_losses=raw,
            base_lr=bounds.base_lr,
            max_lr=bounds.max_lr,
            rule=bounds.rule,
            stop_reason=stop,
            fallback=bounds.fallback,
            group_ratios=ratios,
            skipped_steps=skipped,
        )
        # every rank must train with the same bounds: take rank zero's
        return strategy.broadcast(result, src=0)

    def _train_loaders(self, trainer: L.Trainer) -> list[Any]:
        trainer.fit_loop.setup_data()
        combined = trainer.fit_loop._combined_loader
        if combined is None:
            raise MisconfigurationException(
                "LRRangeTest found no train dataloader (or limit_train_batches=0); the range test needs training data."
            )
        return list(combined.flattened)

    def _batches(self, trainer: L.Trainer, loaders: list[Any]) -> Iterator[tuple[Any, int]]:
        """Endless ``(batch, batch_idx)`` stream on private iterators, restarting exhausted loaders."""
        if len(loaders) > 1:
            from lightning.pytorch.utilities.combined_loader import CombinedLoader

            combined = CombinedLoader(trainer.fit_loop._combined_loader.iterables, "max_size_cycle")
            make = lambda: (b for b, _, _ in iter(combined))  # noqa: E731
        else:
            loader = loaders[0]
            # a persistent-worker loader hands out one shared iterator; the epoch's own must stay untouched
            private = isinstance(loader, DataLoader) and loader.persistent_workers and loader.num_workers > 0
            make = (lambda: loader._get_iterator()) if private else (lambda: iter(loader))  # noqa: E731
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
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
        loaders: list[Any],
        scaler: Any,
    ) -> tuple[list[float], list[float], list[float], str, int]:
        strategy = trainer.strategy
        accumulate = trainer.accumulate_grad_batches
        block_sync = getattr(strategy, "block_backward_sync", None)
        batches = self._batches(trainer, loaders)
        targets = sweep_lrs(self._min_lr, self._max_lr, self._num_steps, self._mode)

        lrs: list[float] = []
        raw: list[float] = []
        smooth: list[float] = []
        avg, best, skipped, stop = 0.0, math.inf, 0, "completed"
        show = self._progress_bar and trainer.is_global_zero and trainer.progress_bar_callback is not None
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
                if skipped > self._num_steps:
                    stop = "too many skipped steps"
                    break
                continue
            if finite:
                avg = self._beta * avg + (1 - self._beta) * value
                smoothed = avg / (1 - self._beta ** (len(lrs) + 1))
                lrs.append(lr)
                raw.append(value)
                smooth.append(smoothed)
                best = min(best, smoothed)
                bar.update(1)
                bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smoothed:.4f}")
            diverged = finite and self._threshold is not None and len(lrs) > 1 and smoothed > self._threshold * best
            if strategy.reduce_boolean_decision(not finite or diverged, all=False):
                stop = "non-finite loss" if not finite else "diverged"
                break
            step += 1
        bar.close()
        return lrs, raw, smooth, stop, skipped

    # ------------------------------------------------------------------ schedule

    def steps_per_epoch(self, trainer: L.Trainer) -> int:
        """Optimizer steps per epoch on each process, as Lightning will run them."""
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise MisconfigurationException(
                "LRRangeTest needs the number of batches per epoch to place cycle boundaries; the train dataloader "
                "has no length. Give it a __len__ or set limit_train_batches to an int."
            )
        return max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))

    def _step_counts(self, trainer: L.Trainer) -> tuple[int, int | None]:
        """``(steps_per_epoch, total_steps)``; ``total_steps`` is ``None`` for a run without an end."""
        trainer.fit_loop.setup_data()  # no-op once done; estimated_stepping_batches skips it for endless runs
        total = trainer.estimated_stepping_batches
        return self.steps_per_epoch(trainer), int(total) if math.isfinite(total) else None

    def _install(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer, result: RangeTestResult) -> None:
        if trainer.lr_scheduler_configs:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            rank_zero_warn(
                f"LRRangeTest: replacing the scheduler from configure_optimizers ({names}) with "
                f"{type(self._schedule).__name__} between the found bounds."
            )
        per_epoch, total = self._step_counts(trainer)
        ratios = result.group_ratios
        self.scheduler = self._schedule.build(
            optimizer,
            [result.base_lr * r for r in ratios],
            [result.max_lr * r for r in ratios],
            steps_per_epoch=per_epoch,
            total_steps=total,
        )
        self._total_steps = total
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(self.scheduler, interval="step", name="lr")]
        rank_zero_info(
            f"LRRangeTest: {type(self._schedule).__name__} between base_lr={result.base_lr:.4g} and "
            f"max_lr={result.max_lr:.4g} ({per_epoch} steps per epoch, rule={result.rule}, {result.stop_reason})."
        )


def _describe(spec: _schedules.Schedule) -> dict[str, Any]:
    """A schedule spec as plain data: its class name and its fields."""
    return {"spec": type(spec).__name__, **asdict(spec)}
