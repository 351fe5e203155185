"""Command-line entry point: compose ``conf/`` with Hydra, instantiate, fit.

Usage::

    python -m lightning_clr.run                                # range test + constant LR
    python -m lightning_clr.run +schedule=sgdr                 # range test + SGDR
    python -m lightning_clr.run +schedule=triangular2 model=mlp trainer.max_epochs=40
    python -m lightning_clr.run -m +schedule=triangular2,sgdr,one_cycle   # one run each
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig

from lightning_clr.checkpointing import interrupt_status
from lightning_clr.config import COMPOSE_ERRORS, ConfigError, checkpoint_path, one_line, register, split_schedule
from lightning_clr.extras import missing_extra
from lightning_clr.faults import RunFault, StopOnNonFiniteLoss
from lightning_clr.preflight import check_checkpoint, explain_override, preflight, resume_path
from lightning_clr.range_test import RangeTestError

register()  # the finder and schedule schemas must be in Hydra's ConfigStore before @hydra.main composes


def config_dir() -> str:
    """Absolute path of the shipped ``conf/`` folder (installed wheel or source checkout)."""
    spec = importlib.util.find_spec("lightning_clr.conf")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str(Path(__file__).resolve().parents[1] / "conf")


def _make(key: str, node: Any, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a constructor's complaint becomes a one-line ``ConfigError``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        raise ConfigError(f"{key}: {one_line(err.__cause__ or err)}") from err


def build(cfg: DictConfig) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule, Any]:
    """Instantiate data, model, finder, callbacks, logger and trainer from a composed config.

    Every constructor validates its arguments, so a bad value fails here, before any
    data is generated or any file is written.

    Raises:
        ConfigError: a value no constructor accepts; the message is one line.
    """
    schedule_node, bounds = split_schedule(cfg)
    datamodule = _make("data", cfg.data)
    shapes = {"input_length": datamodule.input_length, "num_classes": datamodule.num_classes}
    model = _make("model", cfg.model, net=shapes, num_classes=datamodule.num_classes)
    schedule = _make("schedule", schedule_node) if schedule_node is not None else None
    try:  # a live spec, not merged into the config
        finder = _make("finder", cfg.finder, _partial_=True)(schedule=schedule, bounds=bounds)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"finder: {err}") from err
    extra = {k: c for k, c in (cfg.get("callbacks") or {}).items() if c is not None}
    callbacks = [finder] + [_make(f"callbacks.{k}", c) for k, c in extra.items()]
    callbacks += [] if any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks) else [StopOnNonFiniteLoss()]
    logger = _make("logger", cfg.logger) if cfg.get("logger") is not None else False
    trainer = _make("trainer", cfg.trainer, callbacks=callbacks, logger=logger)
    return trainer, model, datamodule, finder


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final callback metrics as floats.

    ``cfg.ckpt_path`` (``+ckpt_path=...``) resumes a run: weights, optimizer, the
    schedule's step and the range-test bounds come from the checkpoint, which is loaded
    with ``torch.load(weights_only=True)``.
    """
    ckpt_path = resume_path(cfg, checkpoint_path)  # ckpt_path=last: this run's last.ckpt, or an error
    preflight(cfg)  # output_dir and $TMPDIR writable, before the range test
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer, model, datamodule, finder = build(cfg)
    check_checkpoint(ckpt_path, model)  # readable, plain data only, this model's weights
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:  # a SystemExit without a status: it would exit 0
        sys.exit(interrupt_status(trainer))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        _report(trainer, finder, metrics)
    return metrics


def _report(trainer: L.Trainer, finder: Any, metrics: dict[str, float]) -> None:
    result = finder.result
    lines = [""]
    if result is not None:
        lines.append(
            f"bounds: base_lr={result.base_lr:.4g} max_lr={result.max_lr:.4g} (rule={result.rule}, "
            + ("restored from the checkpoint, no range test)" if finder.restored
               else f"{len(result.lrs)} sweep steps, {result.stop_reason})")
        )
        if result.fallback:
            lines.append(f"fallback: {result.fallback}")
    shown = ("val/acc", "val/loss", "train/loss_epoch", "train/acc", "gap/loss", "gap/acc")
    lines.append("final: " + "  ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics))
    if trainer.logger is not None and trainer.logger.log_dir:
        lines.append(f"TensorBoard: tensorboard --logdir {Path(trainer.logger.log_dir).resolve()}")
    print("\n".join(lines), flush=True)


#: errors that mean "change the config", reported on one line: a bad value, a range test that
#: cannot start (NaN loss at the first step), a schedule the Trainer cannot run
USER_ERRORS = (ConfigError, RangeTestError, MisconfigurationException)
_FULL_ERROR = "HYDRA_FULL_ERROR"
_full_error_set_by_cli = False


def _exit_with(err: BaseException, status: int = 2) -> NoReturn:
    print(f"error: {missing_extra(err) or one_line(err)}", file=sys.stderr, flush=True)
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
    if not any("hydra.callbacks.run_dir_guard" in arg for arg in sys.argv[1:]):  # one job per run directory
        sys.argv.append("++hydra.callbacks.run_dir_guard._target_=lightning_clr.rundir.RunDirGuard")
    try:
        main()
    except (*COMPOSE_ERRORS, ConfigError) as err:  # ConfigError: the run directory belongs to another job
        _exit_with(explain_override(err))
    finally:
        os.environ.pop(_FULL_ERROR, None)


if __name__ == "__main__":
    cli()
