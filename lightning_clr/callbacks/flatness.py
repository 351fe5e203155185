"""How broad is the minimum? A filter-normalized flatness probe (Li et al. 2018, arXiv 1712.09913).

Warm restarts are meant to carry the weights out of sharp minima into broad ones, which
generalize better. The probe makes that visible: it perturbs the weights along random Gaussian
directions rescaled *per filter* to the norm of that filter's weights (so the perturbation is
relative, and a layer's scale does not matter), at a few noise scales ``sigma``, and measures
the mean rise of the training loss on a fixed set of batches:

    rise(sigma) = mean over directions d of  [L(w + sigma d) + L(w - sigma d)] / 2  -  L(w)

Each direction is used with both signs, which cancels the first-order (gradient) term exactly:
near a minimum ``rise(sigma) ~ sigma**2 / 2 * d' H d`` measures curvature, not slope. Only
forward passes run, in eval mode (batch-norm uses its running statistics and is not updated);
the weights are restored bit-exactly. Filters are the slices along the first dimension of every
parameter with two or more dimensions (a conv kernel per output channel, a row of a linear
layer); one-dimensional parameters (biases, norm scales) are not perturbed, as in Li et al.

Tags written by :class:`FlatnessProbe`: ``flatness/sigma_<s>`` per scale and ``flatness/loss``
(the unperturbed loss on the probe batches), at the step they were measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_warn
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn
from typing_extensions import override

from lightning_clr.callbacks.batches import BatchLayout, Picker, first_batch
from lightning_clr.range_test import steps
from lightning_clr.range_test.figure import failed_write, write_cause
from lightning_clr.schedules import Schedule

LossFn = Callable[[nn.Module, Any], torch.Tensor]


class CrossEntropyLoss:
    """``loss_fn(model, batch)``: mean cross-entropy of ``model(*inputs)`` against the target.

    Args:
        layout: how a batch splits into the model's inputs and the target; ``(x, y)`` by default.
    """

    def __init__(self, layout: BatchLayout | None = None) -> None:
        self.layout = layout or BatchLayout(owner="FlatnessProbe")

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        args, y = self.layout.split(batch)
        return F.cross_entropy(model(*args).float(), y)


cross_entropy_loss = CrossEntropyLoss()  # the default loss of measure_flatness, on (x, y) batches


def filter_normalized_direction(
    params: Sequence[torch.Tensor], generator: torch.Generator, perturb_1d: bool = False
) -> list[torch.Tensor]:
    """A Gaussian direction with every filter rescaled to the norm of the same filter of ``params``.

    The noise is drawn on the CPU from ``generator`` (so it is the same on every device) and
    moved to each parameter's device and dtype.

    Args:
        params: the weights.
        generator: a CPU ``torch.Generator``.
        perturb_1d: also perturb one-dimensional parameters, each as a single filter; off by
            default, as in Li et al.

    Returns:
        One tensor per parameter, shaped like it.
    """
    directions = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        d = d.to(device=p.device, dtype=p.dtype)
        if p.dim() <= 1:
            if perturb_1d:
                d.mul_(p.detach().norm() / d.norm().clamp_min(1e-12))
            else:
                d.zero_()
        else:
            rows, w = d.reshape(p.shape[0], -1), p.detach().reshape(p.shape[0], -1)
            rows.mul_(w.norm(dim=1, keepdim=True) / rows.norm(dim=1, keepdim=True).clamp_min(1e-12))
        directions.append(d)
    return directions


def _check_sigmas(sigmas: Sequence[float]) -> tuple[float, ...]:
    """``sigmas`` as a tuple of floats, checked to be a non-empty list of finite positive scales.

    Raises:
        ValueError: for a string or a bare number (a string would be read character by
            character), an entry that is not a number, or a scale that is not finite and > 0.
    """
    example = "e.g. sigmas=[0.05,0.1]"
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Iterable):
        # a ValueError, as for every other bad config value (the CLI reports those on one line)
        raise ValueError(f"sigmas={sigmas!r} must be a list of noise scales, {example}")  # noqa: TRY004
    try:
        values = tuple(float(s) for s in sigmas)
    except (TypeError, ValueError):
        raise ValueError(f"sigmas={sigmas!r} must be a list of numbers (noise scales), {example}") from None
    if not values or any(not (math.isfinite(s) and s > 0) for s in values):
        raise ValueError(f"sigmas must be positive finite noise scales, {example}; got {list(values)}")
    return values


@torch.no_grad()
def measure_flatness(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn = cross_entropy_loss,
    sigmas: Sequence[float] = (0.05, 0.1, 0.2),
    num_directions: int = 4,
    seed: int = 0,
    perturb_1d: bool = False,
) -> tuple[float, dict[float, float]]:
    """Mean rise of the loss under filter-normalized Gaussian perturbations of the weights.

    Deterministic for a given ``seed``, model and batches; runs
    ``len(batches) * (1 + 2 * num_directions * len(sigmas))`` forward passes; leaves the weights,
    buffers and train/eval mode exactly as they were (even on error).

    Args:
        model: the module to probe; its trainable parameters are perturbed.
        batches: the fixed batches, on the model's device.
        loss_fn: ``loss_fn(model, batch)`` -> scalar loss.
        sigmas: noise scales, relative to each filter's norm.
        num_directions: random directions per scale (each used with both signs).
        seed: seed of the directions.
        perturb_1d: also perturb biases and norm parameters.

    Returns:
        ``(loss, {sigma: rise})``: the unperturbed mean loss and the mean rise per scale.

    Raises:
        ValueError: for an empty ``batches``, no ``sigmas`` or ``num_directions < 1``.

    Example::

        loss, rises = measure_flatness(model, [next(iter(loader))], sigmas=(0.05, 0.1))
    """
    batches = list(batches)
    if not batches:
        raise ValueError("measure_flatness needs at least one batch, got none")
    sigmas = _check_sigmas(sigmas)
    if num_directions < 1:
        raise ValueError(f"num_directions must be >= 1, got {num_directions}")
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    modes = [(m, m.training) for m in model.modules()]  # per module: some may be frozen in eval mode
    generator = torch.Generator().manual_seed(int(seed))

    def mean_loss() -> float:
        return sum(float(loss_fn(model, b)) for b in batches) / len(batches)

    model.eval()
    try:
        base = mean_loss()
        totals = dict.fromkeys(sigmas, 0.0)
        for _ in range(num_directions):
            directions = filter_normalized_direction(saved, generator, perturb_1d)  # norms of the unperturbed weights
            for sigma in totals:
                for sign in (1.0, -1.0):
                    for p, w, d in zip(params, saved, directions):
                        torch.add(w, d, alpha=sign * sigma, out=p.data)
                    totals[sigma] += mean_loss()
        rises = {s: t / (2 * num_directions) - base for s, t in totals.items()}
    finally:
        for p, w in zip(params, saved):
            p.data.copy_(w)
        for module, training in modes:
            module.training = training
    return base, rises


class FlatnessProbe(Callback):
    """Runs :func:`measure_flatness` at every cycle end (or every ``every_n_epochs``) and logs it.

    The probe batches are the first ``num_batches`` training batches of the run (copied to the
    CPU when first seen, and saved in checkpoints), so every measurement of a run, resumed or
    not, uses the same data. With several
    processes each measures on its own batches and the results are averaged. Cycle ends are
    those of the installed schedule, the points where :class:`~lightning_clr.SnapshotEnsemble`
    takes its snapshots. Call :meth:`probe` to measure on demand.

    Args:
        sigmas: noise scales relative to each filter's norm.
        num_batches: training batches in the probe set.
        num_directions: random directions per scale.
        seed: seed of the directions (the same at every measurement).
        every_n_epochs: measure at the end of every n-th epoch instead of at cycle ends.
        schedule: the schedule whose cycle ends to use; ``None`` takes the installed one
            (``steps.installed_schedule``).
        loss_fn: ``loss_fn(model, batch)``; by default the cross-entropy of ``model(*inputs)``
            against the target, the batch taken apart by ``inputs`` and ``target``.
        perturb_1d: also perturb biases and norm parameters.
        inputs: where the model's inputs are in a batch (for the default loss): a position,
            a key, a list of those (a model with several inputs), or a callable taking the batch.
        target: where the integer class labels are: a position, a key, or a callable.

    Raises:
        ValueError: for a setting out of range.
        lightning_clr.callbacks.batches.BatchLayoutError: at the start of ``fit``, when ``inputs`` /
            ``target`` do not fit the first training batch (checked only for the default loss).

    Example::

        trainer = L.Trainer(max_epochs=8, callbacks=[LRRangeTest(schedule=schedules.SGDR()), FlatnessProbe()])
    """

    def __init__(
        self,
        sigmas: Sequence[float] = (0.05, 0.1, 0.2),
        num_batches: int = 4,
        num_directions: int = 4,
        seed: int = 0,
        every_n_epochs: int | None = None,
        schedule: Schedule | None = None,
        loss_fn: LossFn | None = None,
        perturb_1d: bool = False,
        inputs: Picker = 0,
        target: Picker = 1,
    ) -> None:
        sigmas = _check_sigmas(sigmas)
        if num_batches < 1 or num_directions < 1:
            raise ValueError(f"num_batches ({num_batches}) and num_directions ({num_directions}) must be >= 1")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1 or None (cycle ends), got {every_n_epochs}")
        self._sigmas, self._num_batches, self._num_directions = sigmas, int(num_batches), int(num_directions)
        self._seed, self._every, self._schedule = int(seed), every_n_epochs, schedule
        self.layout = BatchLayout(inputs, target, owner="FlatnessProbe")
        self._check_layout = loss_fn is None
        self._loss_fn = loss_fn or CrossEntropyLoss(self.layout)
        self._perturb_1d = perturb_1d
        self._batches: list[Any] = []
        self._ends: set[int] = set()
        self.history: list[dict[str, float]] = []

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._check_layout:  # fail before any step, not at the first cycle end
            trainer.fit_loop.setup_data()
            batch = first_batch(trainer.train_dataloader)
            if batch is not None:
                self.layout.check(trainer.strategy.batch_to_device(batch), pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._every is None:
            self._ends = set(steps.cycle_ends(trainer, self._schedule))

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if len(self._batches) < self._num_batches:
            self._batches.append(apply_to_collection(batch, torch.Tensor, lambda t: t.detach().to("cpu", copy=True)))

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step in self._ends and not any(h["step"] == step for h in self.history):
            self.probe(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._every is not None and (trainer.current_epoch + 1) % self._every == 0:
            self.probe(trainer, pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        # the probe batches travel with the checkpoint: a resumed run keeps measuring on the same data
        return {"batches": self._batches, "history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._batches = list(state_dict.get("batches", []))
        self.history = list(state_dict.get("history", []))

    def probe(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Measure now, log to every logger (rank zero) and return the logged values."""
        if not self._batches:
            rank_zero_warn("FlatnessProbe: no training batch seen yet; nothing to measure.")
            return {}
        batches = [apply_to_collection(b, torch.Tensor, lambda t: t.to(pl_module.device)) for b in self._batches]
        loss, rises = measure_flatness(pl_module, batches, self._loss_fn, self._sigmas, self._num_directions,
                                       self._seed, self._perturb_1d)
        values = torch.tensor([loss, *rises.values()], dtype=torch.float64, device=pl_module.device)
        values = trainer.strategy.reduce(values, reduce_op="mean")
        metrics = {"flatness/loss": float(values[0])}
        metrics.update({f"flatness/sigma_{s:g}": float(v) for s, v in zip(rises, values[1:])})
        step = trainer.global_step
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                _log(logger, metrics, step)
        self.history.append({"step": step, **metrics})
        return metrics


def _log(logger: Logger, metrics: dict[str, float], step: int) -> None:
    """Log ``metrics``; a failed write (a full disk, a read-only folder) warns on one line and training goes on."""
    try:
        logger.log_metrics(metrics, step=step)
    except (OSError, ValueError) as err:  # loggers wrap what add_scalar raised in a ValueError
        failure = failed_write(err)
        if failure is None:
            raise
        where = getattr(logger, "log_dir", None) or type(logger).__name__
        rank_zero_warn(f"FlatnessProbe: could not write {', '.join(metrics)} at step {step} to '{where}' "
                       f"({write_cause(failure)}); training goes on (FlatnessProbe.history keeps them)")
