from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from lightning_clr.cli.main import config_dir, train

# The tests train tiny models: one thread each is many times faster than two threads
# fighting over the two cores of a CI machine (subprocesses inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# the smallest real run of the entry point: synthetic data, 2 epochs, a 60-step range test
SMALL = ["data=synthetic", "trainer.max_epochs=2", "finder.num_steps=60", "finder.start_lr=1e-4",
         "trainer.enable_progress_bar=false"]


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The real config from conf/, composed as the CLI would, without running Hydra's app."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="session")
def sgdr_run(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """One small SGDR run of the entry point whose TensorBoard files several tests read."""
    out = tmp_path_factory.mktemp("sgdr_run")
    metrics = train(compose_config([*SMALL, "+schedule=sgdr", "schedule.cycle_epochs=0.5"], out))
    return out, metrics
