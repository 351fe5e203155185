"""The LR range test (Smith 2017, arXiv 1506.01186, section 3.3) as a Lightning callback.

Before the first epoch, :class:`LRRangeTest` trains for ``num_steps`` optimizer steps while
raising the learning rate from ``start_lr`` to ``end_lr`` (:mod:`~lightning_clr.range_test.sweep`),
puts everything back exactly (:mod:`~lightning_clr.range_test.restore`), reads a pair of bounds off
the curve (:mod:`~lightning_clr.selection`), and installs a schedule between them as a
per-step ``LRSchedulerConfig``. Resume checks are pure functions in :mod:`~lightning_clr.range_test.resume`.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.parsing import lightning_setattr
from lightning.pytorch.utilities.types import LRSchedulerConfig
from typing_extensions import override

from lightning_clr import schedules as _schedules
from lightning_clr.range_test import resume, settings, steps
from lightning_clr.range_test.conditions import check_callbacks, group_ratios, lr_attribute, sweep_optimizer
from lightning_clr.range_test.figure import log_range_test
from lightning_clr.range_test.groups import adopt_new_groups, follow_outside_changes
from lightning_clr.range_test.lr_free import (
    ScheduleFreeModes,
    has_batch_norm,
    is_schedule_free,
    outside_the_loop,
    train_without_schedule,
)
from lightning_clr.range_test.readability import RERUN, Decision, Policy, capped, decide
from lightning_clr.range_test.result import RangeTestResult
from lightning_clr.range_test.sweep import (
    batch_stream,
    check_record,
    held_out_batches,
    run_sweep,
    sweep_lrs,
    train_loaders,
)
from lightning_clr.selection import RULES, select_bounds

#: the checkpoint key of the param groups' LR ratios as training left them
_LIVE_RATIOS = "live_group_ratios"


class LRRangeTest(Callback):
    """Runs an LR range test at the start of ``fit`` and trains with a schedule between its bounds.

    Args:
        schedule: the schedule to install between the found bounds (a spec from
            :mod:`lightning_clr.schedules`); ``None`` means the default, ``WSD()``: a warm-up to
            ``max_lr``, a plateau there and a final decay to ``base_lr``, the schedule chosen
            leave-one-family-out across ``benchmarks/suite.py``.
        start_lr: the LR of the first sweep step.
        end_lr: the LR of the last planned sweep step. ``None`` (the default) plans the sweep to
            100 (``settings.DEFAULT_END_LR``) and lets it go on past that while the loss still falls
            (see ``max_extensions``); any number given, 100 included, is a ceiling the sweep never
            passes.
        num_steps: optimizer steps in the sweep (one point each). The sweep cycles the
            train loader if an epoch is shorter and ignores ``max_epochs`` and ``limit_train_batches``;
            ``sweep_share`` may shorten it.
        mode: ``"exponential"`` (evenly spaced in log LR, as fastai) or ``"linear"`` (as Smith).
        ema_beta: weight of the moving average of the sweep's loss,
            ``avg = beta * avg + (1 - beta) * loss``, bias-corrected by ``1 - beta**(k+1)``.
        divergence_threshold: stop once the running median of the loss exceeds this multiple
            of its lowest value. ``None`` (the default) never stops early; a non-finite loss
            always stops the sweep.
        rule: bound-selection rule, one of :data:`lightning_clr.selection.RULES`.
        rule_options: keyword options of the rule, e.g. ``{"stop_frac": 0.7}`` for ``smith``.
        bounds: ``(base_lr, max_lr)`` to use instead of running the sweep; the one way to skip it.
        replace_scheduler: a scheduler returned by ``configure_optimizers`` is replaced
            (with a warning) when ``True``; when ``False`` its presence is an error.
        progress_bar: show a progress bar of the sweep (when the Trainer shows one).
        group_scales: LR of each param group relative to the others, during the sweep and
            in the schedule, e.g. ``[0.1, 1.0]``; ``None`` keeps the optimizer's LR ratios.
        max_extensions: while the loss is still falling at the last LR, continue the sweep
            by another decade (exponential) or half its length (linear), at most this many times;
            only when ``end_lr`` is ``None`` (the default end, 100), never past an ``end_lr`` given,
            and never above ``settings.MAX_LR`` (1e4).
        min_fall: a sweep whose loss falls by less than this fraction of its top trained too
            little to read (its loss moved only near the unstable LRs): it is run again from
            the same state with twice the steps, at most ``max_reruns`` times. 0 never reruns.
        max_reruns: the most reruns of a shallow sweep (``result.reruns`` says how many ran).
        update_attr: write the found ``max_lr`` into the module's ``attr_name`` (as
            Lightning's finder writes its suggestion), e.g. ``model.lr`` or ``model.hparams.lr``.
        attr_name: the attribute for ``update_attr``; ``""`` looks for ``lr`` then ``learning_rate``.
        metric: ``"train_loss"`` records the training loss of each sweep step; ``"val_loss"``
            the mean ``training_step`` loss (without gradients, in eval mode) on the first
            ``val_batches`` validation batches after each step, as torch-lr-finder's ``val_loader``.
        val_batches: validation batches of the ``"val_loss"`` metric (the same at every step).
        sweep_share: the largest share of the run's optimizer steps that the sweep (and each rerun,
            extensions included) may take, when the run's length is known: a 60-step run sweeps 30
            steps at 0.5, over the same ``start_lr`` to ``end_lr``; reruns that would take more do not
            run. Never fewer than ``settings.MIN_STEPS`` (20), the fewest a curve is read from (a
            warning says when that is more than the share). ``None`` (the default until the task suite
            chooses a share) never shortens the sweep.

    Raises:
        ValueError: for a setting out of range; the message names the value and the fix.

    A **Schedule-Free** optimizer (``schedulefree.AdamWScheduleFree`` and its kin, arXiv
    2405.15682) is swept in train mode with its own warm-up off, then trains at ``lr = max_lr``
    (times each group's ratio) with no schedule but its own warm-up; a scheduler from
    ``configure_optimizers`` is dropped with a warning. The callback keeps it in train mode for
    training steps and in eval mode for validation (BatchNorm statistics recomputed at the eval
    weights from a few training batches), for the weights every checkpoint stores and after
    ``fit``. An optimizer whose ``lr`` only scales a step size it estimates (Prodigy,
    D-Adaptation) is refused in ``on_fit_start``, before any step, with or without ``bounds``.

    On ``fit(ckpt_path=...)`` the bounds come from the checkpoint (no new range test) and
    Lightning restores the schedule's step, so the LR continues exactly where it stopped.
    A second ``fit`` of the same Trainer keeps the bounds and fits the schedule to the
    remaining steps. ``fast_dev_run`` skips the range test (with a warning) and keeps the optimizer's LR.

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
        start_lr: float = 1e-5,
        end_lr: float | None = None,
        num_steps: int = 200,
        mode: str = "exponential",
        ema_beta: float = 0.5,
        divergence_threshold: float | None = None,
        rule: str = "smith",
        rule_options: dict[str, Any] | None = None,
        bounds: tuple[float, float] | None = None,
        replace_scheduler: bool = True,
        progress_bar: bool = True,
        group_scales: list[float] | None = None,
        max_extensions: int = 2,
        min_fall: float = 0.1,
        max_reruns: int = 2,
        update_attr: bool = False,
        attr_name: str = "",
        metric: str = "train_loss",
        val_batches: int = 4,
        sweep_share: float | None = None,
        **old_names: Any,
    ) -> None:
        moved = settings.renamed_arguments(old_names, {"start_lr": start_lr, "end_lr": end_lr, "ema_beta": ema_beta},
                                           _defaults())
        start_lr, end_lr = moved.get("start_lr", start_lr), moved.get("end_lr", end_lr)
        ema_beta = moved.get("ema_beta", ema_beta)
        self._schedule = settings.check_schedule(schedule)
        self._schedule_given = schedule is not None
        self._start_lr = settings.check_lr("start_lr", start_lr, "a sweep starts at a small LR such as 1e-5")
        self._end_lr = settings.check_end_lr(end_lr, self._start_lr)
        # None is the default end, a first guess the sweep may pass; an end the user gave is a ceiling
        self._extendable = end_lr is None
        self._num_steps = settings.check_count("num_steps", num_steps, settings.MIN_STEPS, "200 is the default",
                                               purpose=" to read a curve")
        self._mode = settings.check_choice("mode", mode, settings.SWEEP_MODES)
        self._ema_beta = settings.check_ema_beta(ema_beta)
        self._divergence_threshold = settings.check_divergence_threshold(divergence_threshold)
        self._rule = settings.check_choice("rule", rule, sorted(RULES))
        self._rule_options = settings.check_rule_options(rule, rule_options, RULES)
        self._bounds = settings.check_bounds(bounds)
        self._replace_scheduler = bool(replace_scheduler)
        self._progress_bar = bool(progress_bar)
        self._group_scales = settings.check_group_scales(group_scales)
        self._max_extensions = settings.check_count("max_extensions", max_extensions, 0,
                                                    "0 never extends the sweep")
        self._min_fall = settings.check_min_fall(min_fall)
        self._max_reruns = settings.check_count("max_reruns", max_reruns, 0, "0 never reruns a shallow sweep")
        self._update_attr = bool(update_attr)
        self._attr_name = str(attr_name)
        self._metric = settings.check_choice("metric", metric, settings.METRICS)
        self._val_batches = settings.check_count("val_batches", val_batches, 1, "4 is the default")
        self._sweep_share = settings.check_sweep_share(sweep_share)

        self.result: RangeTestResult | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._restored = False
        self._plan: dict[str, Any] = {}
        self._saved_plan: dict[str, Any] = {}
        # each param group's LR ratio as training goes on: groups added (BackboneFinetuning) or LRs
        # changed by other callbacks (SWA) move these, never the result, which records the range test
        self._group_ratios: list[float] = []
        # train / eval mode of a Schedule-Free optimizer through fit (None for any other optimizer)
        self._modes: ScheduleFreeModes | None = None

    @property
    def schedule(self) -> _schedules.Schedule:
        """The schedule installed between the found bounds."""
        return self._schedule

    @property
    def restored(self) -> bool:
        """Whether this fit took its bounds from a checkpoint instead of running the range test."""
        return self._restored

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        free = len(trainer.optimizers) == 1 and is_schedule_free(trainer.optimizers[0])
        self._modes = ScheduleFreeModes(trainer.optimizers[0]) if free else None
        if trainer.fast_dev_run:
            rank_zero_warn("LRRangeTest: skipped, since fast_dev_run is on; training keeps the optimizer's LR. "
                           "Run without fast_dev_run to run the range test.")
            return
        optimizer = sweep_optimizer(trainer, pl_module, restored=self._restored,
                                    replace_scheduler=self._replace_scheduler)
        attr = lr_attribute(pl_module, self._attr_name) if self._update_attr else None
        ratios = group_ratios(optimizer, self._group_scales)
        per_epoch, total = self._step_counts(trainer, shaped=not free)
        continuing = trainer.global_step > 0 and self.result is not None and not self._restored
        if continuing:  # a second fit of one Trainer: same bounds, the schedule fitted to the steps left
            total = None if total is None else max(1, total - trainer.global_step)
        spec = None if free else self.schedule  # a Schedule-Free optimizer trains without one
        if spec is not None:
            try:
                spec.check(steps_per_epoch=per_epoch, total_steps=total)  # fail before the sweep
            except ValueError as err:
                raise MisconfigurationException(f"LRRangeTest: {err}") from err
        if self._restored or continuing:
            assert self.result is not None
            if self._restored:
                bounds = self._bounds or (self.result.base_lr, self.result.max_lr)
                problem = resume.mismatch(self._saved_plan, resume.plan(spec, bounds, ratios, per_epoch, total))
                if problem is not None:
                    raise MisconfigurationException(f"LRRangeTest: {problem}")
            rank_zero_info(f"LRRangeTest: continuing with base_lr={self.result.base_lr:.4g}, "
                           f"max_lr={self.result.max_lr:.4g} (no new range test).")
        else:
            if self._bounds is not None:
                base, top = self._bounds
                self.result = RangeTestResult([], [], [], base, top, "explicit", "explicit bounds", group_ratios=ratios)
            else:
                self.result = self._sweep(trainer, pl_module, optimizer, ratios, total)
            self._group_ratios = list(self.result.group_ratios)
            log_range_test(trainer, self.result, spec)  # the curve (if swept), the bounds and what trains between them
        if free:
            self._install_free(trainer, optimizer)
        else:
            self._install(trainer, optimizer, per_epoch, total)
        if attr is not None:
            lightning_setattr(pl_module, attr, self.result.max_lr)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._modes is not None:
            self._modes.train()  # at every batch, so that a run resumed mid-epoch trains at y too
        if self.scheduler is None or self.result is None:
            return
        known, optimizer = len(self._group_ratios), trainer.optimizers[0]
        if len(optimizer.param_groups) > known:  # e.g. BackboneFinetuning unfroze a backbone
            added = adopt_new_groups(self.scheduler, optimizer, known)
            self._group_ratios.extend(added)
            rank_zero_info(f"LRRangeTest: {len(added)} new param group(s) follow the schedule at LR ratios {added}.")
        follow_outside_changes(self.scheduler, optimizer, self._group_ratios)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._modes is not None and trainer.state.fn == TrainerFn.FITTING:
            self._eval_mode(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._modes is not None and trainer.state.fn == TrainerFn.FITTING:
            self._modes.train()

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._modes is not None:  # the weights a user evaluates, saves or tests after fit
            self._eval_mode(trainer, pl_module)

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._modes is not None:  # the eval weights, without moving the live ones
            names: dict[torch.Tensor, list[str]] = {}
            for name, p in pl_module.named_parameters(remove_duplicate=False):  # tied weights under each name
                names.setdefault(p, []).append(name)
            self._modes.checkpoint(checkpoint, checkpoint["state_dict"], names)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a checkpoint's state, if any, is loaded after this hook
            self._restored = False
            check_callbacks(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        # plain numbers and strings only: the checkpoint loads with torch.load(weights_only=True)
        if self.result is None:
            return {}
        return {"result": self.result.to_dict(), _LIVE_RATIOS: list(self._group_ratios), **self._plan}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "result" in state_dict:
            self.result = RangeTestResult.from_dict(state_dict["result"])
            # a checkpoint of an earlier version kept the live ratios in its result
            self._group_ratios = list(state_dict.get(_LIVE_RATIOS, self.result.group_ratios))
            self._saved_plan = {"bounds": [self.result.base_lr, self.result.max_lr],
                                **{k: v for k, v in state_dict.items() if k not in ("result", _LIVE_RATIOS)}}
            self._restored = True

    def _policy(self, total: int | None) -> Policy:
        """What the settings allow a sweep whose curve cannot be read yet (see :mod:`.readability`), in a run of
        ``total`` optimizer steps (``None``: unknown), with its length capped by ``sweep_share``."""
        ceiling = settings.MAX_LR if self._extendable else self._end_lr
        policy = Policy(self._mode, self._num_steps, self._max_extensions, self._min_fall, self._max_reruns, ceiling)
        return capped(policy, settings.sweep_cap(self._sweep_share, total))

    def _step_counts(self, trainer: L.Trainer, shaped: bool = True) -> tuple[int, int | None]:
        """``(steps_per_epoch, total_steps)``; a loader without a length works unless the shape needs it.

        Args:
            trainer: the Trainer in ``on_fit_start``.
            shaped: whether the schedule will be installed (not for a Schedule-Free optimizer).

        Raises:
            MisconfigurationException: no train batch, or a length the schedule needs is unknown.
        """
        if trainer.limit_train_batches == 0 or steps.train_batches(trainer) == 0:
            raise MisconfigurationException(
                f"LRRangeTest: the train dataloader gives no batch (limit_train_batches={trainer.limit_train_batches!r}"
                "); the range test and the schedule need training batches: check limit_train_batches and the "
                "dataset (its length, the batch size, drop_last)."
            )
        per_epoch, total = steps.steps_per_epoch(trainer), steps.total_steps(trainer)
        if per_epoch is None:
            if shaped and self.schedule.needs_epoch_length:
                raise MisconfigurationException(
                    f"LRRangeTest: {self.schedule!r} measures lengths in epochs, but the train dataloader has no "
                    "__len__; give the lengths in optimizer steps (step_size, cycle_steps, warmup_steps), or set "
                    "limit_train_batches to an int."
                )
            if shaped and total is None and self.schedule.needs_total_steps:
                raise MisconfigurationException(
                    f"LRRangeTest: {type(self.schedule).__name__} is fitted to the whole run, but the train "
                    "dataloader has no __len__, so the run's length in steps is unknown; set max_steps on the Trainer."
                )
            per_epoch = 1  # read by no shape that needs no epoch length
        return per_epoch, total

    def _sweep(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer,
               ratios: list[float], total: int | None) -> RangeTestResult:
        policy = self._policy(total)
        note = settings.cap_note(self._sweep_share, total, asked=self._num_steps, taken=policy.num_steps)
        if note is not None:
            (rank_zero_warn if note.warn else rank_zero_info)(f"LRRangeTest: {note.text}")
        # the held-out batches of the val_loss metric are fetched once, for every run
        val_batches = held_out_batches(trainer, self._val_batches) if self._metric == "val_loss" else None
        for reruns in range(self._max_reruns + 1):
            ask = partial(_ask, policy=policy, reruns=reruns)
            record = run_sweep(trainer, pl_module, optimizer, ratios,
                               sweep_lrs(self._start_lr, self._end_lr, policy.num_steps, self._mode),
                               ema_beta=self._ema_beta, divergence_threshold=self._divergence_threshold,
                               progress_bar=self._progress_bar, more=ask, val_batches=val_batches)
            check_record(record, self._start_lr)
            # rank zero's decision on every rank: all of them sweep again, or none
            decision = trainer.strategy.broadcast(ask(record.lrs, record.smooth, record.extended, stop=record.stop),
                                                  src=0)
            if decision.action != RERUN:
                break
            rank_zero_info(f"LRRangeTest: {decision.reason}")
            policy = replace(policy, num_steps=2 * policy.num_steps)
        bounds = select_bounds(record.lrs, record.smooth, rule=self._rule, **self._rule_options)
        if bounds.fallback:
            rank_zero_warn(f"LRRangeTest: {bounds.fallback}")
        result = RangeTestResult(record.lrs, record.smooth, record.raw, bounds.base_lr, bounds.max_lr, bounds.rule,
                                 record.stop, bounds.fallback, ratios, record.skipped, record.extended, reruns)
        return trainer.strategy.broadcast(result, src=0)  # every rank trains with rank zero's bounds

    def _install(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer, per_epoch: int,
                 total: int | None) -> None:
        assert self.result is not None
        result, spec = self.result, self.schedule
        if trainer.lr_scheduler_configs:
            names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
            rank_zero_warn(f"LRRangeTest: replacing the scheduler from configure_optimizers ({names}) with "
                           f"{type(spec).__name__} between the found bounds.")
        ratios = self._group_ratios
        self.scheduler = spec.build(optimizer, [result.base_lr * r for r in ratios],
                                    [result.max_lr * r for r in ratios], steps_per_epoch=per_epoch, total_steps=total)
        steps.register_schedule(self.scheduler, spec)
        self._plan = resume.plan(spec, (result.base_lr, result.max_lr), ratios, per_epoch, total)
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(self.scheduler, interval="step", name="lr")]
        rank_zero_info(f"LRRangeTest: {type(spec).__name__} between base_lr={result.base_lr:.4g} and "
                       f"max_lr={result.max_lr:.4g} ({per_epoch} steps per epoch, rule={result.rule}, "
                       f"{result.stop_reason}).")

    def _install_free(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> None:
        """A Schedule-Free optimizer trains at ``max_lr`` (times each group's ratio), with no schedule."""
        assert self.result is not None
        result = self.result
        train_without_schedule(trainer, optimizer, result, self._group_ratios,
                               ignored=type(self.schedule).__name__ if self._schedule_given else None)
        self.scheduler = None
        self._plan = resume.plan(None, (result.base_lr, result.max_lr), self._group_ratios, None, None)

    def _eval_mode(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The Schedule-Free optimizer in eval mode, BatchNorm statistics recomputed at its eval weights
        from the first training batches (on a private iterator, without a trace)."""
        assert self._modes is not None
        if not has_batch_norm(pl_module) or not self._modes.bn_batches:
            self._modes.eval(pl_module)
            return
        loaders = train_loaders(trainer)
        with outside_the_loop(trainer, pl_module, loaders):
            self._modes.eval(pl_module, partial(batch_stream, trainer, loaders, cycle=False),
                             lambda item: trainer.strategy.training_step(*item))


def _defaults() -> dict[str, Any]:
    """The defaults of :class:`LRRangeTest`'s arguments, by name."""
    return {k: p.default for k, p in inspect.signature(LRRangeTest.__init__).parameters.items()}


def _ask(lrs: list[float], smooth: list[float], extended: int, *, policy: Policy, reruns: int,
         stop: str = "completed") -> Decision:
    """:func:`~lightning_clr.range_test.readability.decide` with the sweep's arguments in its order."""
    return decide(lrs, smooth, extended=extended, reruns=reruns, stop=stop, policy=policy)
