from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from lightning_clr.cli.main import config_dir, train
from lightning_clr.cli.rundir import JOB_ENV

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


@pytest.fixture(autouse=True)
def _no_inherited_job_id():
    """A test that runs the entry point in this process sets the job id its DDP workers inherit; it must not
    reach the next test's subprocesses, which would then look like processes of the same job."""
    saved = os.environ.pop(JOB_ENV, None)
    yield
    os.environ.pop(JOB_ENV, None)
    if saved is not None:
        os.environ[JOB_ENV] = saved


@pytest.fixture(scope="session")
def sgdr_run(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """One small SGDR run of the entry point whose TensorBoard files several tests read."""
    out = tmp_path_factory.mktemp("sgdr_run")
    metrics = train(compose_config([*SMALL, "+schedule=sgdr", "schedule.cycle_epochs=0.5"], out))
    return out, metrics


@pytest.fixture(scope="session")
def cli_cases(tmp_path_factory) -> Callable[..., dict]:
    """``cli_cases({name: args, ...})``: each case through :func:`tests.helpers.run_cli` in a folder of its own,
    two at a time (the CI machine has 2 cores) on the one pool every test module shares; returns
    ``{name: (CompletedProcess, folder)}``."""
    from tests.helpers import run_cli

    with ThreadPoolExecutor(max_workers=2) as pool:
        def run(cases: Mapping[str, list[str]], **env: str) -> dict:
            dirs = {name: tmp_path_factory.mktemp(name) for name in cases}
            futures = {name: pool.submit(run_cli, list(args), dirs[name], **env) for name, args in cases.items()}
            return {name: (future.result(), dirs[name]) for name, future in futures.items()}

        yield run
