"""Undo the range test: a bit-exact, in-memory copy of everything a few training steps change.

The range test trains for real, so it must leave no trace: weights, buffers,
optimizer state, gradient-scaler state, metric states, train/eval modes and the data
loaders' own random generators are copied to CPU memory before the sweep
(:meth:`TrainingState.take`) and written back afterwards (:meth:`TrainingState.restore`).
The global generators (Python, NumPy, torch, CUDA) are kept by Lightning's public
``isolate_rng`` around the sweep. Nothing touches the disk, so nothing needs a shared
file system on multi-node runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torchmetrics import Metric

from lightning_clr._compat import metric_state, set_metric_state


def to_cpu(obj: Any) -> Any:
    """Deep copy of ``obj`` with every tensor cloned to CPU memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def loader_generators(loaders: list[Any]) -> list[torch.Generator]:
    """Private generators of data loaders and their samplers (not covered by the global RNG)."""
    found: list[torch.Generator] = []
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
            gen = getattr(owner, "generator", None)
            if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
                found.append(gen)
    return found


def metric_states(module: nn.Module) -> dict[str, tuple[dict[str, Any], int, Any]]:
    """A CPU copy of every torchmetrics ``Metric``'s state in ``module``, by module name."""
    return {
        name: (to_cpu(m.metric_state), *map(to_cpu, metric_state(m)))
        for name, m in module.named_modules()
        if isinstance(m, Metric)
    }


def put_metric_states(module: nn.Module, saved: dict[str, tuple[dict[str, Any], int, Any]]) -> None:
    """Write :func:`metric_states` back into the metrics of ``module``."""
    for name, m in module.named_modules():
        if name in saved and isinstance(m, Metric):
            state, count, computed = saved[name]
            for attr, value in state.items():
                setattr(m, attr, _to_device(value, m.device))
            set_metric_state(m, count, computed)


@contextmanager
def untouched(module: nn.Module, loaders: list[Any]) -> Iterator[None]:
    """Run forward passes that leave no trace in the metrics of ``module`` or in any random generator.

    The global generators are kept by Lightning's ``isolate_rng``, the loaders' own by
    :func:`loader_generators`; the metrics' states are copied and written back.
    """
    metrics = metric_states(module)
    generators = [(g, g.get_state()) for g in loader_generators(loaders)]
    try:
        with isolate_rng():
            yield
    finally:
        put_metric_states(module, metrics)
        for gen, state in generators:
            gen.set_state(state)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter (``p:<name>``) and buffer (``b:<name>``) of ``module``, shared ones under each name."""
    tensors = {f"p:{k}": v for k, v in module.named_parameters(remove_duplicate=False)}
    tensors.update({f"b:{k}": v for k, v in module.named_buffers(remove_duplicate=False)})
    return tensors


@dataclass
class TrainingState:
    """What :meth:`take` saw; :meth:`restore` writes it back in place.

    Parameters and buffers are restored with ``copy_`` into the same tensor objects,
    so the optimizer's references to its parameters stay valid.
    """

    tensors: dict[str, torch.Tensor]
    modes: dict[str, bool]
    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    scaler: dict[str, Any] | None
    metrics: dict[str, tuple[dict[str, Any], int, Any]]
    generators: list[tuple[torch.Generator, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def take(
        cls,
        module: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any] = (),
        scaler: Any = None,
        loaders: list[Any] = (),
    ) -> TrainingState:
        return cls(
            tensors={k: to_cpu(v) for k, v in _tensors(module).items()},
            modes={name: m.training for name, m in module.named_modules()},
            optimizers=[to_cpu(opt.state_dict()) for opt in optimizers],
            schedulers=[to_cpu(s.state_dict()) for s in schedulers],
            scaler=to_cpu(scaler.state_dict()) if scaler is not None else None,
            metrics=metric_states(module),
            generators=[(g, g.get_state()) for g in loader_generators(list(loaders))],
        )

    def restore(
        self,
        module: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        schedulers: list[Any] = (),
        scaler: Any = None,
    ) -> None:
        with torch.no_grad():
            live = _tensors(module)
            for key, saved in self.tensors.items():
                live[key].copy_(saved)
        for name, m in module.named_modules():
            if name in self.modes:
                m.training = self.modes[name]
        put_metric_states(module, self.metrics)
        for opt, state in zip(optimizers, self.optimizers):
            opt.load_state_dict(state)
            opt.zero_grad(set_to_none=True)
        for sched, state in zip(schedulers, self.schedulers):
            sched.load_state_dict(state)
        if scaler is not None and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        for gen, state in self.generators:
            gen.set_state(state)

    def nbytes(self) -> int:
        """CPU memory held by the snapshot's tensors."""
        total = 0

        def visit(obj: Any) -> None:
            nonlocal total
            if isinstance(obj, torch.Tensor):
                total += obj.numel() * obj.element_size()
            elif isinstance(obj, dict):
                for v in obj.values():
                    visit(v)
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    visit(v)

        visit([self.tensors, self.optimizers, self.schedulers, self.scaler, self.metrics])
        return total


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value
