"""Command-line entry point (``python -m lightning_clr.run``): compose ``conf/`` with Hydra, instantiate, fit.

Usage::

    python -m lightning_clr.run                                # range test + WSD (the default)
    python -m lightning_clr.run +schedule=sgdr                 # range test + SGDR
    python -m lightning_clr.run +schedule=triangular2 model=mlp trainer.max_epochs=40
    python -m lightning_clr.run -m +schedule=triangular2,sgdr,one_cycle   # one run each
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from typing_extensions import override

from lightning_clr._compat import FIT_WEIGHTS_ONLY
from lightning_clr.callbacks.ensemble import SnapshotFileError
from lightning_clr.cli.checkpointing import interrupt_status
from lightning_clr.cli.config import COMPOSE_ERRORS, ConfigError, checkpoint_path, one_line, plain_text, register
from lightning_clr.cli.extras import missing_extra
from lightning_clr.cli.faults import RunFault, StopOnNonFiniteLoss, keep_going_on_write_errors
from lightning_clr.cli.preflight import check_checkpoint, explain_override, preflight, resume_path, trusts_checkpoint
from lightning_clr.cli.rundir import release
from lightning_clr.data.base import DataFileError
from lightning_clr.range_test.result import RangeTestError, RangeTestResult

register()  # the finder and schedule schemas must be in Hydra's ConfigStore before @hydra.main composes


def config_dir() -> str:
    """Absolute path of the shipped ``conf/`` folder (installed wheel or source checkout)."""
    spec = importlib.util.find_spec("lightning_clr.conf")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


def _keyed(key: str, node: Any, message: str) -> str:
    """``message`` prefixed by the config key: ``finder.end_lr (inf) ...`` when it opens with an argument of the node."""
    head = re.match(r"[A-Za-z_]\w*", message)
    if head is not None and isinstance(node, DictConfig) and head.group(0) in node:
        return f"{key}.{message}"
    return f"{key}: {message}"


def _make(key: str, node: Any, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a constructor's complaint becomes a one-line ``ConfigError``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        raise ConfigError(_keyed(key, node, one_line(err.__cause__ or err))) from err


#: keys of a node that Hydra's ``instantiate`` reads itself; all others are constructor arguments
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})


def _locate(key: str, node: Any) -> Any:
    """The class or function that ``node._target_`` names; anything unusable is a one-line ``ConfigError``."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        raise ConfigError(
            f"{key}: the node has no _target_; add +{key}._target_=package.module.Class, or select a shipped "
            f"option with {key}=NAME"
        )
    try:
        return pkgutil.resolve_name(target)
    except ModuleNotFoundError as err:
        top = target.split(".")[0]
        fix = (f"install the package, or put the folder that holds {top}/ on PYTHONPATH"
               if err.name is not None and top == err.name.split(".")[0] else f"{top} imports it: install {err.name}")
        raise ConfigError(f"{key}._target_={target}: no module named {err.name!r}; {fix}") from err
    except AttributeError as err:
        raise ConfigError(f"{key}._target_={target}: {err}; check the spelling of the name after the module") from err
    except Exception as err:  # the user's module failed while being imported
        raise ConfigError(f"{key}._target_={target}: importing it raised {type(err).__name__}: {err}") from err


def _check_arguments(key: str, node: DictConfig, target: Any, source: tuple[str, Any] = ("", None)) -> None:
    """Refuse keys ``target`` does not take and required arguments the node lacks, naming the override to fix it.

    Args:
        key: the node's key (``model``, ``data``).
        node: the node to instantiate.
        target: what ``node._target_`` names.
        source: ``(key, node)`` of a node whose keys can fill a missing argument by interpolation
            (``("data", cfg.data)`` for ``model``).
    """
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself reports
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {p.name for p in params if p.kind in by_name}
    given = [str(k) for k in node if k not in _HYDRA_KEYS]
    name = node._target_
    unknown = [k for k in given if k not in named]
    if unknown:
        empty = f"start from an empty node: ~{key} +{key}._target_={name} (and +{key}.ARG=VALUE for its arguments)"
        if any(node[k] is None for k in unknown):  # Hydra cannot delete a key whose value is null
            fix = empty
        else:
            removals = " ".join(f"~{key}.{k}" for k in unknown)
            fix = f"remove {'it' if len(unknown) == 1 else 'them'} with {removals}, or {empty}"
        raise ConfigError(f"{key}: {name} takes no argument {', '.join(unknown)}; {fix}")
    if node.get("_partial_") or node.get("_args_"):
        return
    missing = [p.name for p in params if p.kind in by_name and p.default is p.empty and p.name not in given]
    if missing:
        source_key, source_node = source
        adds = " ".join(
            f"'+{key}.{m}=${{{source_key}.{m}}}'" if isinstance(source_node, DictConfig) and m in source_node
            else f"+{key}.{m}=VALUE"
            for m in missing
        )
        raise ConfigError(f"{key}: {name} needs {', '.join(missing)}; add {adds}")


def _make_checked(key: str, node: Any, kind: type, source: tuple[str, Any] = ("", None)) -> Any:
    """``instantiate(node)`` for a node the user may point anywhere (``model``, ``data``): checked target and type."""
    target = _locate(key, node)
    try:  # an interpolation such as ${data.num_classes} that points nowhere
        OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:
        where = err.full_key or key
        reason = str(err.msg).splitlines()[0]
        raise ConfigError(f"{where}: {reason}; add the key it points to, or give {where} a value") from err
    _check_arguments(key, node, target, source)
    obj = _make(key, node)
    if not isinstance(obj, kind):
        raise ConfigError(
            f"{key}._target_={node._target_} built a {type(obj).__qualname__}, not a {kind.__name__}; "
            f"point {key}._target_ at a {kind.__name__} subclass"
        )
    return obj


def _check_trainer(node: Any) -> None:
    """Refuse Trainer values that Lightning would only trip over later (a division by zero in an epoch's length)."""
    value = node.get("accumulate_grad_batches", 1) if isinstance(node, DictConfig) else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={value!r}: must be an integer >= 1 (the batches whose "
                          "gradients add up to one optimizer step); use 1 to step after every batch")


def build(cfg: DictConfig) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule | None, Any]:
    """Instantiate data, model, finder, callbacks, logger and trainer from a composed config.

    ``model`` and ``data`` are instantiated exactly as configured, so any LightningModule
    and LightningDataModule work (``model._target_=mypkg.MyModule``); the shipped models
    take their shapes from the data node by interpolation in their own YAML. Without a
    ``data`` node (``~data``) the model serves its own loaders. Every constructor
    validates its arguments, so a bad value fails here, before any data is generated or
    any file is written.

    Raises:
        ConfigError: a target that cannot be imported, a key its constructor does not
            take, a missing required argument, a value no constructor accepts; the
            message is one line and names the override that fixes it.
    """
    schedule_node = cfg.get("schedule")
    datamodule = _make_checked("data", cfg.data, L.LightningDataModule) if cfg.get("data") is not None else None
    if cfg.get("model") is None:
        raise ConfigError("model: no model is configured; select one with model=cnn, or give yours with "
                          "+model._target_=package.module.MyModule")
    model = _make_checked("model", cfg.model, L.LightningModule, source=("data", cfg.get("data")))
    schedule = _make("schedule", schedule_node) if schedule_node is not None else None
    try:  # a live spec, not merged into the config
        finder = _make("finder", cfg.finder, _partial_=True)(schedule=schedule)
    except (TypeError, ValueError) as err:
        raise ConfigError(_keyed("finder", cfg.finder, str(err))) from err
    extra = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c is not None}
    callbacks = [finder] + [_make(f"callbacks.{k}", c) for k, c in extra.items()]
    callbacks += [] if any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks) else [StopOnNonFiniteLoss()]
    logger = keep_going_on_write_errors(_make("logger", cfg.logger)) if cfg.get("logger") is not None else False
    _check_trainer(cfg.trainer)
    trainer = _make("trainer", cfg.trainer, callbacks=callbacks, logger=logger)
    return trainer, model, datamodule, finder


class _Progress(L.Callback):
    """Notes when training proper starts: after the range test and the sanity check."""

    def __init__(self) -> None:
        self.started = False
        self.new_log_dirs: list[Path] = []  # the loggers' folders this run creates (see _new_log_dirs)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True


def _output_dir(cfg: DictConfig) -> str | None:
    try:
        return cfg.get("output_dir")
    except OmegaConfBaseException:  # ${hydra:...} outside Hydra's app
        return None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final callback metrics as floats.

    ``cfg.ckpt_path`` (``+ckpt_path=...``) resumes a run: weights, optimizer, the
    schedule's step and the range-test bounds come from the checkpoint, which is loaded
    with ``torch.load(weights_only=True)``. A checkpoint whose hyperparameters hold objects
    (an ``nn.Module``, a ``functools.partial``) is refused unless ``cfg.trust_checkpoint`` is
    true (``+trust_checkpoint=true``), which loads it with ``weights_only=False``.

    A run that fails before training starts (a pre-flight check, a bad value, a range test
    that cannot start) releases its run folder, so the corrected command may use it.
    """
    progress = _Progress()
    try:
        return _train(cfg, progress)
    except BaseException:
        if not progress.started:
            release(_output_dir(cfg), "failed before training")
            _remove_unused(progress.new_log_dirs)  # the corrected command logs to the same version
        raise


#: what a logger writes before training: a run whose folder holds nothing else recorded no training
_BEFORE_TRAINING = ("events.out.tfevents.*", "hparams.yaml", "metrics.csv")


def _new_log_dirs(trainer: L.Trainer, run_dir: str | None) -> list[Path]:
    """For each logger, the outermost folder of its ``log_dir`` inside ``run_dir`` that does not exist yet."""
    if run_dir is None:
        return []
    root, found = Path(run_dir).resolve(), []
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if not log_dir:
            continue
        path = Path(log_dir).resolve()
        if path.exists() or root not in path.parents:
            continue
        while path.parent != root and not path.parent.exists():
            path = path.parent
        found.append(path)
    return found


def _remove_unused(paths: list[Path]) -> None:
    """Remove each of ``paths`` that holds nothing but what a logger writes before training."""
    for path in paths:
        files = [f for f in path.rglob("*") if not f.is_dir()] if path.is_dir() else None
        if files is not None and all(any(f.match(p) for p in _BEFORE_TRAINING) for f in files):
            shutil.rmtree(path, ignore_errors=True)


def _train(cfg: DictConfig, progress: _Progress) -> dict[str, float]:
    ckpt_path = resume_path(cfg, checkpoint_path)  # ckpt_path=last: this run's last.ckpt, or an error
    preflight(cfg)  # output folders this run's and writable, before the range test
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer, model, datamodule, finder = build(cfg)
    trainer.callbacks.append(progress)
    progress.new_log_dirs = _new_log_dirs(trainer, _output_dir(cfg)) if trainer.is_global_zero else []
    check_checkpoint(ckpt_path, model, cfg)  # readable, plain data only (or trusted), this model's weights
    load = {**FIT_WEIGHTS_ONLY, "weights_only": False} if FIT_WEIGHTS_ONLY and trusts_checkpoint(cfg) else FIT_WEIGHTS_ONLY
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **load)
    except SIGTERMException:  # a SystemExit without a status: it would exit 0
        sys.exit(interrupt_status(trainer))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        _report(trainer, finder, metrics)
    return metrics


def _reruns(result: RangeTestResult) -> str:
    n = result.reruns
    return f" after {n} rerun{'s' if n > 1 else ''} of a shallow sweep" if n else ""


def _report(trainer: L.Trainer, finder: Any, metrics: dict[str, float]) -> None:
    result = finder.result
    lines = [""]
    if result is not None:
        lines.append(
            f"bounds: base_lr={result.base_lr:.4g} max_lr={result.max_lr:.4g} (rule={result.rule}, "
            + ("restored from the checkpoint, no range test)" if finder.restored
               else f"{len(result.lrs)} sweep steps{_reruns(result)}, {result.stop_reason})")
        )
        if result.fallback:
            lines.append(f"fallback: {result.fallback}")
    ours = ("val/acc", "val/loss", "train/loss_epoch", "train/acc", "gap/loss", "gap/acc")
    shown = [k for k in ours if k in metrics] or sorted(metrics)  # a user's module logs its own names
    lines.append("final: " + "  ".join(f"{k}={metrics[k]:.4f}" for k in shown))
    if trainer.logger is not None and trainer.logger.log_dir:
        lines.append(f"TensorBoard: tensorboard --logdir {Path(trainer.logger.log_dir).resolve()}")
    print("\n".join(lines), flush=True)


#: errors that mean "change the config", reported on one line: a bad value, a range test that
#: cannot start (NaN loss at the first step), a schedule the Trainer cannot run, a data or snapshot
#: file that is not what it should be
USER_ERRORS = (ConfigError, DataFileError, SnapshotFileError, RangeTestError, MisconfigurationException)
_FULL_ERROR = "HYDRA_FULL_ERROR"
_full_error_set_by_cli = False


def _exit_with(err: BaseException, status: int = 2) -> NoReturn:
    print(f"error: {plain_text(missing_extra(err) or one_line(err))}", file=sys.stderr, flush=True)
    sys.exit(status)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    if _full_error_set_by_cli:  # composition is over: Hydra reports any other error its own way again
        os.environ.pop(_FULL_ERROR, None)
    try:
        metrics = train(cfg)
    except USER_ERRORS as err:
        if os.environ.get(_FULL_ERROR) == "1":
            raise
        _exit_with(err)
    except RunFault as err:  # the run started and could not go on (NaN loss, a checkpoint write failed)
        if os.environ.get(_FULL_ERROR) == "1":
            raise
        _exit_with(err, status=1)
    return metrics.get("val/acc")


def cli() -> None:
    """``python -m lightning_clr.run``: :func:`main`, with config errors on one line and exit status 2.

    Hydra prints a composition error (unknown key, wrong type, no such option) over several
    lines; here it is one line naming the key, the value and the fix. ``HYDRA_FULL_ERROR=1``
    shows the full traceback instead.
    """
    global _full_error_set_by_cli
    if os.environ.get(_FULL_ERROR) == "1":
        main()
        return
    os.environ[_FULL_ERROR] = "1"  # lets Hydra's composition errors reach the handler below
    _full_error_set_by_cli = True
    try:
        main()
    except (*COMPOSE_ERRORS, ConfigError) as err:  # ConfigError: the run directory belongs to another job
        _exit_with(explain_override(err))
    finally:
        os.environ.pop(_FULL_ERROR, None)

