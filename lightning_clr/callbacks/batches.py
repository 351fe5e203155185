"""Where a batch keeps the model's inputs and the target, for callbacks that run the model themselves.

:class:`~lightning_clr.SnapshotEnsemble` and :class:`~lightning_clr.FlatnessProbe` call the module
outside ``training_step``, so they must take a batch apart the way the module does. A
:class:`BatchLayout` says how: ``inputs`` and ``target`` are positions in a tuple or list batch,
keys of a dict batch (or attribute names), or callables taking the batch::

    BatchLayout()                             # (x, y): model(x) scored against y
    BatchLayout(inputs="signal", target="label")   # {"signal": x, "label": y}
    BatchLayout(inputs=[0, 1], target=2)      # (x1, x2, y): model(x1, x2)
    BatchLayout(inputs=lambda b: (b.x, b.mask), target=lambda b: b.y)

:meth:`BatchLayout.check` takes apart one real batch before training and runs the model on it
once, so a wrong layout fails at the start of ``fit`` with one line that names the setting,
not after the first cycle. :func:`first_batch` reads that batch without changing what the
training run draws from any random number generator.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import nn

Key = int | str
Picker = Key | Sequence[Key] | Callable[[Any], Any]


class BatchLayoutError(ValueError):
    """A batch that the layout cannot take apart; ``str()`` is one line naming the setting to change."""


def _describe(batch: Any) -> str:
    if isinstance(batch, torch.Tensor):
        return f"a Tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {list(batch)}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)}"
    return f"a {type(batch).__name__}"


def _suggestion(batch: Any) -> str:
    """Settings that would read ``batch``, guessed from its structure, e.g. ``inputs='x', target='y'``."""
    if isinstance(batch, Mapping) and len(batch) >= 2:
        keys = [str(k) for k in batch]
        target = next((k for k in keys if k.lower() in ("y", "target", "targets", "label", "labels")), keys[-1])
        inputs = [k for k in keys if k != target]
        return f"inputs={inputs[0]!r}, target={target!r}" if len(inputs) == 1 else f"inputs={inputs}, target={target!r}"
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        return f"inputs={list(range(len(batch) - 1))}, target={len(batch) - 1}"
    return "inputs=<callable(batch) -> model args>, target=<callable(batch) -> labels>"


class BatchLayout:
    """How to take a batch apart into the model's positional inputs and the class-index target.

    Args:
        inputs: where the model's inputs are: a position (tuple/list batch), a key (dict batch,
            or an attribute name), a list of those for a model taking several inputs (passed
            positionally in that order), or a callable ``inputs(batch)`` returning the input or
            a tuple of inputs.
        target: where the integer class labels are: a position, a key, or a callable ``target(batch)``.
        owner: the callback whose settings the error messages name.

    Raises:
        TypeError: for an ``inputs`` or ``target`` of another type.

    Example::

        layout = BatchLayout(inputs=["tokens", "mask"], target="label")
        args, y = layout.split({"tokens": t, "mask": m, "label": y})   # model(*args) scored against y
    """

    def __init__(self, inputs: Picker = 0, target: Picker = 1, owner: str = "the callback") -> None:
        self.owner = owner
        if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            inputs = list(inputs)
            if not inputs:
                raise TypeError(f"{owner}: inputs is an empty list; give at least one position or key, e.g. inputs=0")
        for name, value in (("inputs", inputs), ("target", target)):
            values = value if isinstance(value, list) and name == "inputs" else [value]
            for v in values:
                if not (callable(v) and not isinstance(v, type) or isinstance(v, (int, str)) and not isinstance(v, bool)):
                    raise TypeError(
                        f"{owner}: {name} must be a position (int), a key (str){', a list of those' if name == 'inputs' else ''} "
                        f"or a callable taking the batch, got {v!r}"
                    )
        self.inputs, self.target = inputs, target

    def settings(self) -> str:
        """The current settings as they are written in the owner's constructor."""
        def show(v: Any) -> str:
            return getattr(v, "__name__", "<callable>") if callable(v) else repr(v)

        inputs = "[" + ", ".join(show(v) for v in self.inputs) + "]" if isinstance(self.inputs, list) else show(self.inputs)
        return f"inputs={inputs}, target={show(self.target)}"

    def _fail(self, batch: Any, problem: str) -> BatchLayoutError:
        return BatchLayoutError(
            f"{self.owner}: {problem} in {_describe(batch)} ({self.settings()}); set {self.owner}"
            f"(inputs=..., target=...) to where the batch keeps them, e.g. {self.owner}({_suggestion(batch)})"
        )

    def _pick(self, batch: Any, key: Any, what: str) -> Any:
        if callable(key):
            return key(batch)
        if isinstance(key, int):
            if isinstance(batch, (tuple, list)) and -len(batch) <= key < len(batch):
                return batch[key]
            raise self._fail(batch, f"no {what} at position {key}")
        if isinstance(batch, Mapping):
            if key in batch:
                return batch[key]
        elif hasattr(batch, key) and not isinstance(batch, torch.Tensor):
            return getattr(batch, key)
        raise self._fail(batch, f"no {what} under key {key!r}")

    def split(self, batch: Any) -> tuple[tuple[Any, ...], torch.Tensor]:
        """``(args, target)``: the model is called as ``model(*args)`` and scored against ``target``.

        Raises:
            BatchLayoutError: when the batch has nothing where the layout points.
        """
        if isinstance(self.inputs, list):
            args = tuple(self._pick(batch, k, "input") for k in self.inputs)
        else:
            picked = self._pick(batch, self.inputs, "input")
            args = tuple(picked) if callable(self.inputs) and isinstance(picked, tuple) else (picked,)
        return args, self._pick(batch, self.target, "target")

    def check(self, batch: Any, model: nn.Module | None = None) -> None:
        """Take ``batch`` apart and, with ``model``, run ``model(*args)`` once in eval mode without gradients.

        The model's train/eval mode is restored; nothing else changes.

        Raises:
            BatchLayoutError: when the layout does not fit the batch, the target is not a tensor of
                integer class labels with one entry per example, or the model does not return
                ``(batch, classes)`` logits for these inputs.
        """
        args, target = self.split(batch)
        if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex() or target.dim() != 1:
            shown = f"a {target.dtype} tensor of shape {tuple(target.shape)}" if isinstance(target, torch.Tensor) else (
                f"a {type(target).__name__}")
            raise self._fail(batch, f"the target is {shown}, not one integer class label per example")
        if model is None:
            return
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                out = model(*args)
        except Exception as err:  # the model rejects these inputs: name the setting, keep the cause
            raise self._fail(batch, f"model(*inputs) failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
        finally:
            for module, training in modes:
                module.training = training
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != target.shape[0]:
            shown = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise self._fail(
                batch, f"model(*inputs) returned {shown}, not logits of shape ({target.shape[0]}, classes) for the target"
            )


@contextlib.contextmanager
def preserved_rng(*generators: torch.Generator) -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random state (and ``generators``) on exit."""
    py, np_state = random.getstate(), np.random.get_state()
    saved = [(g, g.get_state()) for g in generators]
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)
            for g, state in saved:
                g.set_state(state)


def _generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a DataLoader's iterator may draw from (its own, its sampler's)."""
    found = []
    for obj in (loader, getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def first_batch(loaders: Any) -> Any | None:
    """The first batch of a loader (or of a collection of loaders, combined as Lightning does).

    Iterates a fresh iterator inside :func:`preserved_rng`, so the run draws the same random
    numbers (shuffle order, augmentation, dropout) as it would without this call.

    Returns:
        The batch, or ``None`` when there is no loader or it is empty.
    """
    if loaders is None:
        return None
    flat = list(loaders.values()) if isinstance(loaders, Mapping) else (
        list(loaders) if isinstance(loaders, (list, tuple)) else [loaders])
    if not flat:
        return None
    generators = [g for loader in flat for g in _generators(loader)]
    with preserved_rng(*generators):
        try:
            batch, _, _ = next(iter(CombinedLoader(loaders, "max_size_cycle")))
        except StopIteration:
            return None
    return batch
