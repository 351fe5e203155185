"""Compatibility in one place: every private name of Lightning, torchmetrics and torch that
the package uses, and the old names of renamed arguments (:func:`renamed`).

The range test trains inside ``fit`` before the first epoch, on the Trainer's own
strategy, so it needs a few pieces of the fit loop that Lightning keeps private. Each
use is wrapped here with the reason and the versions it exists in; the rest of the
package imports only from here, so a Lightning upgrade that moves one is a change in
this file alone. CI runs the oldest and the newest Lightning that ``pyproject.toml``
allows against these.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L

# _set_sampler_epoch: tells a (distributed) sampler which pass it is on, as the fit loop does
# before each epoch, so that the sweep's second pass over a short loader reshuffles.
# lightning.fabric.utilities.data, 2.0 and later.
from lightning.fabric.utilities.data import _set_sampler_epoch as set_sampler_epoch

# _ResultCollection: the store that self.log() writes into during training_step. The sweep
# swaps in a scratch one, so nothing the module logs during the sweep reaches the real
# epoch's metrics. lightning.pytorch.trainer.connectors.logger_connector.result, 2.0 and later.
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader
from torchmetrics import Metric

__all__ = [
    "FIT_WEIGHTS_ONLY",
    "combined_loader",
    "metric_state",
    "private_iterator",
    "renamed",
    "scratch_results",
    "set_metric_state",
    "set_sampler_epoch",
]


def combined_loader(trainer: L.Trainer) -> Any:
    """The fit loop's train ``CombinedLoader`` after ``setup_data()`` (``None`` without train data).

    ``fit_loop._combined_loader`` (2.0 and later) is the only handle on the train loaders as
    Lightning wrapped them (distributed sampler, ``limit_train_batches``) before the first epoch.
    """
    trainer.fit_loop.setup_data()
    return trainer.fit_loop._combined_loader


def private_iterator(loader: Any) -> Iterator[Any]:
    """A fresh iterator over ``loader`` that does not touch the one the epoch will use.

    With ``persistent_workers=True``, ``iter(loader)`` returns a ``DataLoader``'s single shared
    worker iterator; ``DataLoader._get_iterator`` (torch 1.7 and later) makes a new one. Any
    other iterable is iterated as it is.
    """
    if isinstance(loader, DataLoader) and loader.persistent_workers and loader.num_workers > 0:
        return loader._get_iterator()
    return iter(loader)


@contextmanager
def scratch_results(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterator[None]:
    """Run ``training_step`` outside the fit loop: logs go to a scratch collection, then all is put back.

    Touches ``fit_loop.epoch_loop._results`` (the epoch's ``_ResultCollection``),
    ``_logger_connector._current_fx`` / ``_first_loop_iter`` (which hook is logging) and
    ``LightningModule._current_fx_name`` (what ``self.log`` checks), all private since 2.0.
    """
    loop = trainer.fit_loop.epoch_loop
    connector = trainer._logger_connector
    saved = (loop._results, connector._current_fx, connector._first_loop_iter, pl_module._current_fx_name)
    loop._results = _ResultCollection(training=True).to(pl_module.device)
    pl_module._current_fx_name = "training_step"
    try:
        yield
    finally:
        loop._results, connector._current_fx, connector._first_loop_iter, pl_module._current_fx_name = saved


def set_current_batch(trainer: L.Trainer, batch: Any) -> None:
    """Tell the scratch result collection which batch ``self.log`` sees (for its batch size)."""
    trainer.fit_loop.epoch_loop._results.batch = batch


def metric_state(metric: Metric) -> tuple[int, Any]:
    """A torchmetrics ``Metric``'s update count and cached result (``_update_count``,
    ``_computed``; private since torchmetrics 0.x), which its public ``metric_state`` lacks."""
    return metric._update_count, metric._computed


def set_metric_state(metric: Metric, update_count: int, computed: Any) -> None:
    """Inverse of :func:`metric_state`."""
    metric._update_count = update_count
    metric._computed = computed


def per_group_lists(scheduler: Any, groups: int) -> dict[str, list[Any]]:
    """The scheduler's per-param-group lists, by attribute name, each ``groups`` long.

    torch's schedulers keep one entry per group in plain lists: public ones such as
    ``base_lrs`` and (CyclicLR) ``max_lrs`` / ``base_momentums``, the private ``_last_lr``
    (torch 1.4 and later), and this package's ``min_lrs`` / ``max_lrs``. A param group added
    during training (Lightning's ``BackboneFinetuning``) needs an entry in each.
    """
    return {k: v for k, v in vars(scheduler).items() if isinstance(v, list) and len(v) == groups}


def validation_loaders(trainer: L.Trainer) -> list[Any]:
    """The fit's validation loaders, set up before the first epoch (``[]`` without validation).

    ``trainer.val_dataloaders`` is public but empty until the validation loop's
    ``setup_data()`` (on ``fit_loop.epoch_loop.val_loop``, 2.0 and later) has run.
    """
    try:
        trainer.fit_loop.epoch_loop.val_loop.setup_data()
    except MisconfigurationException:  # raised by LightningModule.val_dataloader when there is none
        return []
    loaders = trainer.val_dataloaders
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


#: ``Trainer.fit(weights_only=...)`` exists since Lightning 2.6.0; on older releases the CLI reads a
#: checkpoint with ``torch.load(weights_only=True)`` itself before Lightning loads it
FIT_WEIGHTS_ONLY: dict[str, bool] = (
    {"weights_only": True} if "weights_only" in inspect.signature(L.Trainer.fit).parameters else {}
)


# Renamed arguments: the old name keeps working for a while, with a warning naming the new one.
def renamed(owner: str, old: dict[str, Any], names: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    """Map old keyword arguments to their new names, warning once per use.

    Args:
        owner: what takes the arguments, for the messages (e.g. ``"LRRangeTest"``).
        old: the keyword arguments received under old (or unknown) names.
        names: ``{old_name: new_name}``.
        given: the new-name arguments as passed, to refuse an argument given under both names.

    Returns:
        ``{new_name: value}`` for every old name in ``old``.

    Raises:
        TypeError: for a name that is neither current nor a known old one, or a value
            given under both its old and its new name.
    """
    out: dict[str, Any] = {}
    for key, value in old.items():
        if key not in names:
            raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
        new = names[key]
        if given.get(new) is not None:
            raise TypeError(f"{owner}: {key}= is the old name of {new}=; pass only {new}=")
        warnings.warn(f"{owner}: {key}= is renamed {new}=; {key}= will be removed", DeprecationWarning, stacklevel=3)
        out[new] = value
    return out
