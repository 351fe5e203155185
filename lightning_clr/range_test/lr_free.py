"""Optimizers that bring their own schedule or their own step size.

Two kinds change what a range test can do:

- **Schedule-Free** optimizers (Defazio et al. 2024, "The Road Less Scheduled", arXiv
  2405.15682; the ``schedulefree`` package) keep two sequences: the point ``y`` where gradients
  are taken (the parameters in *train* mode) and the average ``x`` that is evaluated (the
  parameters in *eval* mode). Their ``lr`` is a real learning rate, held constant after an
  optional warm-up, so the range test sweeps it and sets it to the found ``max_lr``; no
  schedule is installed beyond the optimizer's own warm-up. :class:`ScheduleFreeModes` keeps
  the optimizer in the right mode: train for training steps and for the sweep, eval for
  validation, for the weights a checkpoint stores and after fit, with the BatchNorm statistics
  recomputed at ``x`` before validation, as the package's README advises.
- Optimizers whose ``lr`` is a **multiplier** of a step size they estimate themselves (Prodigy,
  Mishchenko & Defazio 2023, arXiv 2306.06101; D-Adaptation, Defazio & Mishchenko 2023, arXiv
  2301.07733). Sweeping the multiplier reads the estimator's warm-up, not a learning rate:
  :func:`multiplier_lr_reason` names the optimizer and the refusal says what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_clr._compat import scratch_results
from lightning_clr.range_test.restore import untouched
from lightning_clr.range_test.result import RangeTestResult

#: param-group keys of the step-size estimators whose ``lr`` is a multiplier (Prodigy, D-Adaptation)
_ESTIMATOR_KEYS = ("d", "d0")


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` keeps Schedule-Free's train / eval sequences (``train()``, ``eval()``, ``train_mode``)."""
    return (callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))
            and all("train_mode" in g for g in optimizer.param_groups))


def ready_to_sweep(optimizer: torch.optim.Optimizer) -> None:
    """Train mode (a Schedule-Free ``step`` refuses to run in eval mode) and no warm-up (it would scale the swept LR).

    Both live in the param groups, so loading the optimizer's state dict taken before puts them back.
    """
    optimizer.train()
    for group in optimizer.param_groups:
        if "warmup_steps" in group:
            group["warmup_steps"] = 0


def warmup_steps(optimizer: torch.optim.Optimizer) -> int:
    """The optimizer's own linear warm-up, in steps (0 for none)."""
    return int(optimizer.param_groups[0].get("warmup_steps", 0))


def train_without_schedule(trainer: L.Trainer, optimizer: torch.optim.Optimizer, result: RangeTestResult,
                           ratios: list[float], ignored: str | None = None) -> None:
    """Set each param group's ``lr`` to ``result.max_lr`` times its ratio and install no scheduler.

    Args:
        trainer: the Trainer in ``on_fit_start``.
        optimizer: the Schedule-Free optimizer.
        result: the range test's result (or the explicit bounds).
        ratios: each param group's LR ratio to the first.
        ignored: the name of a schedule the user asked for, which is not installed (with a warning).
    """
    name = type(optimizer).__name__
    for group, ratio in zip(optimizer.param_groups, ratios):
        group["lr"] = result.max_lr * ratio
    why = f"{name} is Schedule-Free and trains at a constant lr after its own warm-up."
    if trainer.lr_scheduler_configs:
        names = ", ".join(type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs)
        rank_zero_warn(f"LRRangeTest: dropping the scheduler from configure_optimizers ({names}): {why}")
    if ignored is not None:
        rank_zero_warn(f"LRRangeTest: schedule={ignored} is not installed: {why}")
    trainer.strategy.lr_scheduler_configs = []
    warmup = warmup_steps(optimizer)
    rank_zero_info(f"LRRangeTest: {name} trains at lr={result.max_lr:.4g} (the found max_lr) with no schedule, "
                   + (f"after its own warm-up of {warmup} steps" if warmup else "without warm-up")
                   + f" (rule={result.rule}, {result.stop_reason}).")


def multiplier_lr_reason(optimizer: torch.optim.Optimizer) -> str | None:
    """Why ``optimizer``'s ``lr`` is no learning rate to sweep, or ``None`` when it is one."""
    name = type(optimizer).__name__
    if name == "Prodigy" or name.startswith("DAdapt") or all(
            all(k in g for k in _ESTIMATOR_KEYS) for g in optimizer.param_groups):
        lr = optimizer.param_groups[0].get("lr")
        return (f"{name} estimates its own step size and its lr ({lr:g}) only scales that estimate, so a range test "
                f"would sweep the estimator's warm-up, not a learning rate; train {name} without LRRangeTest (lr=1.0, "
                "with a cosine annealing over the run), or use LRRangeTest with SGD, Adam or AdamW")
    return None


def eval_weights(optimizer: torch.optim.Optimizer) -> dict[torch.Tensor, torch.Tensor]:
    """The eval-mode weights ``x`` of every parameter, computed without moving the parameters.

    In train mode a parameter holds ``y = (1 - beta1) z + beta1 x``, so ``x = lerp(y, z, 1 - 1/beta1)``:
    the step ``optimizer.eval()`` takes in place.
    """
    out: dict[torch.Tensor, torch.Tensor] = {}
    for group in optimizer.param_groups:
        beta1 = _beta1(group)
        for p in group["params"]:
            z = optimizer.state.get(p, {}).get("z")
            out[p] = p.detach().clone() if (z is None or not group["train_mode"]) else torch.lerp(
                p.detach(), z.to(p.device), 1 - 1 / beta1)
    return out


def _beta1(group: dict[str, Any]) -> float:
    """Schedule-Free's interpolation weight: ``betas[0]`` (AdamW, RAdam) or ``momentum`` (SGD)."""
    return float(group["betas"][0]) if "betas" in group else float(group["momentum"])


def has_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer that keeps running statistics."""
    return bool(_batch_norms(module))


@contextmanager
def outside_the_loop(trainer: L.Trainer, pl_module: L.LightningModule, loaders: list[Any]) -> Iterator[None]:
    """Run ``training_step`` between two steps of ``fit`` (e.g. in ``on_validation_start``) without a trace.

    What the module logs goes to a scratch collection (the Trainer is put in its training
    stage for the time being, so that ``self.log`` writes there), metrics keep their
    states, and no random generator (global, or a loader's own) moves.
    """
    stage = trainer.state.stage
    trainer.training = True
    try:
        with untouched(pl_module, loaders), scratch_results(trainer, pl_module):
            yield
    finally:
        trainer.state.stage = stage


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def _cumulative_statistics(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Reset the running statistics and average them over the batches seen, then restore each momentum."""
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the recomputation batches
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


class ScheduleFreeModes:
    """Keeps a Schedule-Free optimizer in the mode each stage of ``fit`` needs.

    Args:
        optimizer: the Schedule-Free optimizer (:func:`is_schedule_free`).
        bn_batches: training batches whose forward passes recompute BatchNorm statistics at
            the eval weights before each validation (0: keep the statistics gathered at ``y``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, bn_batches: int = 4) -> None:
        self.optimizer = optimizer
        self.bn_batches = bn_batches

    def train(self) -> None:
        """Parameters at ``y``, where the training steps take their gradients."""
        self.optimizer.train()

    def eval(self, module: nn.Module, batches: Callable[[], Iterator[Any]] | None = None,
             forward: Callable[[Any], Any] | None = None) -> None:
        """Parameters at ``x``; BatchNorm statistics recomputed there from ``batches`` (``forward(batch)`` each)."""
        self.optimizer.eval()
        norms = _batch_norms(module)
        if not norms or not self.bn_batches or batches is None or forward is None:
            return
        was_training = module.training
        module.train()
        with torch.no_grad(), _cumulative_statistics(norms):
            for i, batch in enumerate(batches()):
                if i >= self.bn_batches:
                    break
                forward(batch)
        module.train(was_training)

    def checkpoint(self, checkpoint: dict[str, Any], state_dict: dict[str, torch.Tensor],
                   names: dict[torch.Tensor, str | list[str]]) -> None:
        """Store the eval weights ``x`` (what a user loads to evaluate) and mark the optimizer's state as eval mode.

        Args:
            checkpoint: Lightning's checkpoint dict, in ``on_save_checkpoint``.
            state_dict: the module's ``state_dict()`` as stored in the checkpoint.
            names: each parameter's key in ``state_dict``, or its keys (a parameter shared by two
                modules, such as tied embeddings, is stored under each of its names).

        The live parameters are not moved, so training goes on exactly. On resume, the optimizer
        loads in eval mode with the parameters at ``x``, and the first training step's
        :meth:`train` takes them back to ``y``.
        """
        if not any(g["train_mode"] for g in self.optimizer.param_groups):
            return  # already at x: the stored weights are the eval weights
        stored = dict(state_dict)
        for p, x in eval_weights(self.optimizer).items():
            keys = names.get(p, [])
            for key in [keys] if isinstance(keys, str) else keys:
                stored[key] = x.to(state_dict[key].device)
        checkpoint["state_dict"] = stored
        for states in checkpoint.get("optimizer_states", []):
            for group in states.get("param_groups", []):
                if "train_mode" in group:
                    group["train_mode"] = False
