"""Command-line entry point: compose ``conf/`` with Hydra, instantiate, fit.

Usage::

    python -m lightning_clr.run                                # range test + constant LR
    python -m lightning_clr.run +schedule=sgdr                 # range test + SGDR
    python -m lightning_clr.run +schedule=triangular2 model=mlp trainer.max_epochs=40
    python -m lightning_clr.run -m +schedule=triangular2,sgdr,one_cycle   # one run each
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig


def config_dir() -> str:
    """Absolute path of the shipped ``conf/`` folder (installed wheel or source checkout)."""
    spec = importlib.util.find_spec("lightning_clr.conf")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))).resolve())
    return str((Path(__file__).resolve().parents[1] / "conf"))


def build(cfg: DictConfig) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule, Any]:
    """Instantiate data, model, finder, callbacks, logger and trainer from a composed config."""
    datamodule = instantiate(cfg.data)
    shapes = {"input_length": datamodule.input_length, "num_classes": datamodule.num_classes}
    model = instantiate(cfg.model, net=shapes, num_classes=datamodule.num_classes)
    schedule = instantiate(cfg.schedule) if cfg.get("schedule") is not None else None
    finder = instantiate(cfg.finder, _partial_=True)(schedule=schedule)  # a live spec, not merged into the config
    callbacks = [finder] + [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") is not None else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    return trainer, model, datamodule, finder


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final callback metrics as floats."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer, model, datamodule, finder = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        _report(trainer, finder, metrics)
    return metrics


def _report(trainer: L.Trainer, finder: Any, metrics: dict[str, float]) -> None:
    result = finder.result
    lines = [""]
    if result is not None:
        lines.append(
            f"bounds: base_lr={result.base_lr:.4g} max_lr={result.max_lr:.4g} "
            f"(rule={result.rule}, {len(result.lrs)} sweep steps, {result.stop_reason})"
        )
        if result.fallback:
            lines.append(f"fallback: {result.fallback}")
    shown = ("val/acc", "val/loss", "train/loss_epoch", "train/acc", "gap/loss", "gap/acc")
    lines.append("final: " + "  ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics))
    if trainer.logger is not None and trainer.logger.log_dir:
        lines.append(f"TensorBoard: tensorboard --logdir {Path(trainer.logger.log_dir).resolve()}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("val/acc")


if __name__ == "__main__":
    main()
