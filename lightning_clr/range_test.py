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
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.types import LRSchedulerConfig
from typing_extensions import override

from lightning_clr import schedules as _schedules
from lightning_clr.logging import log_range_test
from lightning_clr.selection import RULES, select_bounds
from lightning_clr.steps import SPEC_ATTR
from lightning_clr.sweep import SWEEP_MODES, run_sweep, sweep_lrs


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
        group_scales: LR of each param group relative to the others, during the sweep and
            in the schedule, e.g. ``[0.1, 1.0]`` for a backbone at a tenth of the head's LR.
            The bounds are read for the first group and each group trains between
            ``base_lr * scale / group_scales[0]`` and ``max_lr * scale / group_scales[0]``.
            ``None`` keeps the ratios of the LRs the optimizer was created with.

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
        group_scales: list[float] | None = None,
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
        if group_scales is not None:
            group_scales = [float(s) for s in group_scales]
            if not group_scales or not all(math.isfinite(s) and s > 0 for s in group_scales):
                raise ValueError(
                    f"group_scales must be one finite positive number per param group, got {group_scales}; "
                    "e.g. [0.1, 1.0] for two groups, or None to keep the optimizer's LR ratios"
                )
        if schedule is not None and not isinstance(schedule, _schedules.Schedule):
            raise TypeError(f"schedule must be a lightning_clr.schedules spec, got {type(schedule).__name__}")
        self._schedule = schedule if schedule is not None else _schedules.Constant()
        self._min_lr, self._max_lr, self._num_steps = float(min_lr), float(max_lr), int(num_steps)
        self._mode, self._beta, self._threshold = mode, float(smoothing), divergence_threshold
        self._rule, self._bounds = rule, bounds
        self._replace_scheduler, self._progress_bar = replace_scheduler, progress_bar
        self._group_scales = group_scales
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
        self._install(trainer, optimizer, self.result, per_epoch, total)

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
            self._build(optimizer, ratios, bounds, per_epoch, total)
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
        saved_ratios = self.result.group_ratios
        if self._group_scales is not None and (
            len(ratios) != len(saved_ratios) or not all(map(math.isclose, ratios, saved_ratios))
        ):
            raise MisconfigurationException(
                f"LRRangeTest: the checkpoint trained its param groups at LR ratios {saved_ratios} but "
                f"group_scales={self._group_scales} asks for {ratios}; resume with the same group_scales, "
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
        """Each param group's LR relative to the first: from ``group_scales`` or the optimizer's LRs."""
        groups = len(optimizer.param_groups)
        if self._group_scales is not None:
            if len(self._group_scales) != groups:
                raise MisconfigurationException(
                    f"group_scales={self._group_scales} has {len(self._group_scales)} entries but the optimizer has "
                    f"{groups} param groups; give one scale per group, or group_scales=None to keep their LR ratios."
                )
            return [s / self._group_scales[0] for s in self._group_scales]
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
        targets = sweep_lrs(self._min_lr, self._max_lr, self._num_steps, self._mode)
        curve = run_sweep(trainer, pl_module, optimizer, ratios, targets, smoothing=self._beta,
                          divergence_threshold=self._threshold, progress_bar=self._progress_bar)
        if not curve.lrs and curve.stop == "too many skipped steps":
            raise RangeTestError(
                f"all {curve.skipped} range-test steps were skipped: training_step returned None, or the gradient "
                "scaler found inf/NaN gradients at every step. Return the loss from training_step, or train with "
                "precision='bf16-mixed', which needs no scaler."
            )
        if not curve.lrs:
            raise RangeTestError(
                f"the loss was not finite at the first range-test step (lr={self._min_lr:g}): the model or the data "
                "produce NaN/inf before any real update. Check the inputs and the loss, or lower min_lr."
            )
        bounds = select_bounds(curve.lrs, curve.smooth, rule=self._rule)
        if bounds.fallback:
            rank_zero_warn(f"LRRangeTest: {bounds.fallback}")
        result = RangeTestResult(
            lrs=curve.lrs,
            losses=curve.smooth,
            raw_losses=curve.raw,
            base_lr=bounds.base_lr,
            max_lr=bounds.max_lr,
            rule=bounds.rule,
            stop_reason=curve.stop,
            fallback=bounds.fallback,
            group_ratios=ratios,
            skipped_steps=curve.skipped,
        )
        # every rank must train with the same bounds: take rank zero's
        return trainer.strategy.broadcast(result, src=0)

    # ------------------------------------------------------------------ schedule

    @staticmethod
    def steps_per_epoch(trainer: L.Trainer) -> int:
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

    def _build(
        self,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
        bounds: tuple[float, float],
        per_epoch: int,
        total: int | None,
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The schedule between ``bounds`` (the first param group's), every group scaled by its ratio."""
        base, top = bounds
        return self._schedule.build(
            optimizer, [base * r for r in ratios], [top * r for r in ratios], steps_per_epoch=per_epoch, total_steps=total
        )

    def _install(
        self,
        trainer: L.Trainer,
        optimizer: torch.optim.Optimizer,
        result: RangeTestResult,
        per_epoch: int,
        total: int | None,
    ) -> None:
        if trainer.lr_scheduler_configs:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            rank_zero_warn(
                f"LRRangeTest: replacing the scheduler from configure_optimizers ({names}) with "
                f"{type(self._schedule).__name__} between the found bounds."
            )
        self.scheduler = self._build(optimizer, result.group_ratios, (result.base_lr, result.max_lr), per_epoch, total)
        setattr(self.scheduler, SPEC_ATTR, self._schedule)  # steps.installed_schedule finds the spec here
        self._total_steps = total
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(self.scheduler, interval="step", name="lr")]
        rank_zero_info(
            f"LRRangeTest: {type(self._schedule).__name__} between base_lr={result.base_lr:.4g} and "
            f"max_lr={result.max_lr:.4g} ({per_epoch} steps per epoch, rule={result.rule}, {result.stop_reason})."
        )


def _describe(spec: _schedules.Schedule) -> dict[str, Any]:
    """A schedule spec as plain data: its class name and its fields."""
    return {"spec": type(spec).__name__, **asdict(spec)}
