"""Resume of a user's own run through the command line, for a module in lightning-hydra-template's style.

``mypkg.TemplateModule`` takes its network and optimizer as live objects and calls
``save_hyperparameters()``, so its checkpoints pickle an ``nn.Module`` and a ``functools.partial``:
``torch.load(weights_only=True)`` refuses them. ``trust_checkpoint=true`` resumes such a run; a
checkpoint that pickles anything else (``builtins.eval``, ``os.system``) is refused and never run.
"""

from __future__ import annotations

import csv
import functools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from lightning_clr.cli.config import ConfigError, plain_text
from lightning_clr.cli.main import build, train
from lightning_clr.cli.preflight import check_checkpoint, trusts_checkpoint
from tests.conftest import compose_config

USERPKG = Path(__file__).resolve().parent / "userpkg"
#: the template-style module and the user's data module, as a user writes them on the command line
TEMPLATE = [
    "~data", "+data._target_=mypkg.BlobsDataModule", "+data.num_classes=3",
    "~model", "+model._target_=mypkg.TemplateModule", "+model.net._target_=mypkg.DenseNet",
    "+model.optimizer._target_=torch.optim.SGD", "+model.optimizer._partial_=true", "+model.optimizer.lr=0.01",
    "+model.optimizer.momentum=0.9",
    "finder.num_steps=20", "+schedule=sgdr", "schedule.cycle_epochs=1",  # restarts after epochs 1 and 3
    "+callbacks=checkpoint", "logger=csv", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
]
STEPS_PER_EPOCH = 20  # 640 samples, batch 32


def _lrs(run: Path) -> dict[int, float]:
    """The LR at every optimizer step, from the run's metrics.csv."""
    (path,) = run.glob("csv/version_*/metrics.csv")
    with path.open() as f:
        return {int(row["step"]): float(row["lr"]) for row in csv.DictReader(f) if row.get("lr")}


def _trusting(cfg, ckpt_path: Path):
    with open_dict(cfg):
        cfg.ckpt_path, cfg.trust_checkpoint = str(ckpt_path), True
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-epoch run, its resume to 4 epochs with trust_checkpoint, and an uninterrupted 4-epoch run."""
    root = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(USERPKG))
        train(compose_config([*TEMPLATE, "trainer.max_epochs=2"], root / "first"))
        last = root / "first" / "checkpoints" / "last.ckpt"
        train(_trusting(compose_config([*TEMPLATE, "trainer.max_epochs=4"], root / "resumed"), last))
        train(compose_config([*TEMPLATE, "trainer.max_epochs=4"], root / "full"))
    return {"root": root, "first": root / "first", "resumed": root / "resumed", "full": root / "full", "last": last}


@pytest.mark.slow
def test_the_checkpoint_holds_objects_that_weights_only_refuses(runs):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(runs["last"], map_location="cpu", weights_only=True)
    hparams = torch.load(runs["last"], map_location="cpu", weights_only=False)["hyper_parameters"]
    assert isinstance(hparams["net"], torch.nn.Module) and isinstance(hparams["optimizer"], functools.partial)


@pytest.mark.slow
def test_trust_checkpoint_resumes_the_run_step_for_step(runs):
    first, resumed, full = _lrs(runs["first"]), _lrs(runs["resumed"]), _lrs(runs["full"])
    total = 4 * STEPS_PER_EPOCH
    assert sorted(first) == list(range(2 * STEPS_PER_EPOCH)) and sorted(resumed) == list(range(40, total))
    assert sorted(full) == list(range(total))
    assert full[60] > 1.5 * full[59]  # an SGDR restart inside the resumed part
    assert {**first, **resumed} == full  # every step, exactly
    header = next(runs["resumed"].glob("csv/version_*/metrics.csv")).read_text().splitlines()[0]
    assert "range_test/" not in header  # the bounds came from the checkpoint: no second sweep


@pytest.mark.slow
def test_without_trust_the_resume_is_refused_naming_both_ways_out(runs, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(USERPKG))
    cfg = compose_config([*TEMPLATE, "trainer.max_epochs=4", f"+ckpt_path={runs['last']}"], tmp_path)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    line = str(err.value)
    assert line.startswith(f"ckpt_path={runs['last']}: refused, it pickles objects mypkg.DenseNet, ")
    assert "if this run wrote it, resume with trust_checkpoint=true" in line  # the key is in conf/config.yaml
    assert line.endswith("to keep objects out of new checkpoints, call "
                         "self.save_hyperparameters(ignore=['net', 'optimizer'])")
    assert not list(tmp_path.rglob("metrics.csv"))  # nothing trained


@pytest.mark.slow
def test_the_refusal_through_the_real_command_is_one_plain_line(runs, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(USERPKG), str(USERPKG.parents[1])])}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "lightning_clr.run", *TEMPLATE, "trainer.max_epochs=4",
                           f"+ckpt_path={runs['last']}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr + proc.stdout
    (line,) = [s for s in proc.stderr.splitlines() if s.startswith("error: ")]
    assert "trust_checkpoint=true" in line and "save_hyperparameters(ignore=['net', 'optimizer'])" in line
    assert not list((tmp_path / "run").rglob("*.csv"))


class _Payload:
    """Pickles to a call that writes ``marker``: what a crafted checkpoint would run."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "eval":
            return eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)
        return os.system, (f"touch {self.marker}",)


@pytest.mark.slow
@pytest.mark.parametrize("how, named", [("eval", "builtins.eval"), ("system", "posix.system")])
def test_a_crafted_global_is_refused_without_running_even_beside_the_runs_own_objects(how, named, runs, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.syspath_prepend(str(USERPKG))
    marker = tmp_path / "marker"
    state = torch.load(runs["last"], map_location="cpu", weights_only=False)
    state["hyper_parameters"]["note"] = _Payload(how, marker)
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    assert not marker.exists()
    cfg = compose_config([*TEMPLATE, "trainer.max_epochs=4"], tmp_path)
    _, model, _, _ = build(cfg)
    with pytest.raises(ConfigError) as err:
        check_checkpoint(str(crafted), model, cfg)
    assert str(err.value).startswith(f"ckpt_path={crafted}: refused, it pickles {named}, which neither torch nor "
                                     "this run's config names, and loading it would run that code")
    assert "trust_checkpoint=true" in str(err.value)
    assert not marker.exists()


def test_trust_checkpoint_takes_only_a_boolean():
    cfg = compose_config(["++trust_checkpoint=maybe"])
    with pytest.raises(ConfigError, match=r"^trust_checkpoint='maybe': must be true or false$"):
        trusts_checkpoint(cfg)
    assert trusts_checkpoint(compose_config(["++trust_checkpoint=true"])) is True
    assert trusts_checkpoint(compose_config([])) is False


def test_printed_text_loses_terminal_escape_codes():
    torch_message = ("Weights only load failed. This file can still be loaded, to do so you have two options, "
                     "\x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In")
    assert plain_text(torch_message) == (
        "Weights only load failed. This file can still be loaded, to do so you have two options, do those steps only "
        "if you trust the source of the checkpoint. (1) In")
