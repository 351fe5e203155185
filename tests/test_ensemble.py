"""Snapshot ensembles: one snapshot per finished SGDR cycle, files, and the logged ensemble metric."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_clr import LRRangeTest, SnapshotEnsemble, load_ensemble, schedules
from lightning_clr.ensemble import schedule_cycle_ends, snapshot_files
from tests.helpers import tiny_data, tiny_model, tiny_trainer

CYCLE = 8  # SGDR cycle in optimizer steps; 16 steps per epoch, 2 epochs: cycles end at 8, 16, 24, 32


class StateAt(Callback):
    """Copies the module's state_dict right after the optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step, self.state = step, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.state is None:
            self.state = copy.deepcopy(pl_module.state_dict())


@pytest.fixture(scope="module")
def sgdr_fit(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=CYCLE, cycle_mult=1), bounds=(0.01, 0.2))
    snapshots = SnapshotEnsemble(num_snapshots=3)
    first = StateAt(CYCLE)
    model, data = tiny_model(), tiny_data()
    trainer = tiny_trainer(root, max_epochs=2, callbacks=[finder, snapshots, first])
    trainer.fit(model, datamodule=data)
    return trainer, model, data, snapshots, first


def test_one_snapshot_per_finished_cycle(sgdr_fit):
    trainer, model, _, snapshots, first = sgdr_fit
    assert snapshots.cycle_ends == [8, 16, 24, 32]
    files = snapshot_files(snapshots.dirpath)
    assert [f.name for f in files] == ["cycle_1.pt", "cycle_2.pt", "cycle_3.pt", "cycle_4.pt"]
    assert snapshots.dirpath == Path(trainer.default_root_dir) / "snapshots"  # no logger, no checkpoint folder
    # m = 3: the last three stay in memory, all four on disk
    assert [(s.cycle, s.step) for s in snapshots.snapshots] == [(2, 16), (3, 24), (4, 32)]
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    for snap, state in zip(snapshots.snapshots, states[1:]):
        assert state.keys() == snap.state.keys()
        assert all(torch.equal(state[k], snap.state[k]) for k in state)
    # taken right after the cycle's last optimizer step: cycle 1 is the model at step 8 ...
    assert all(torch.equal(states[0][k], first.state[k].cpu()) for k in states[0])
    # ... and the run ends on a cycle end, so cycle 4 is the final model
    final = model.state_dict()
    assert all(torch.equal(states[3][k], final[k].cpu()) for k in final)
    # the snapshots differ from each other (the model kept training between cycles)
    assert not torch.equal(states[0]["net.net.0.weight"], states[1]["net.net.0.weight"])


def _hand_ensemble(states, x):
    probs = []
    for state in states:
        member = tiny_model()
        member.load_state_dict(state)
        member.eval()
        with torch.no_grad():
            probs.append(F.softmax(member(x), dim=1))
    return sum(probs) / len(probs)


def test_logged_ensemble_metric_is_the_mean_softmax_of_the_last_m(sgdr_fit):
    trainer, _, data, snapshots, _ = sgdr_fit
    (x, y), = list(data.val_dataloader())  # the whole validation set is one batch
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in snapshot_files(snapshots.dirpath)]
    mean = _hand_ensemble(states[-3:], x)  # the last validation saw snapshots 2, 3, 4
    nll = F.nll_loss(mean.log(), y).item()
    acc = (mean.argmax(1) == y).float().mean().item()
    metrics = trainer.callback_metrics
    assert metrics["ensemble/size"].item() == 3
    assert metrics["ensemble/val_loss"].item() == pytest.approx(nll, rel=1e-5)
    assert metrics["ensemble/val_acc"].item() == pytest.approx(acc, abs=1e-7)
    # an ensemble is not its last member: the averaged loss differs from the final model's
    assert abs(metrics["ensemble/val_loss"].item() - metrics["val/loss"].item()) > 1e-3
    # and the inference helper computes the same probabilities
    ensemble = load_ensemble(tiny_model(), snapshots.dirpath, last=3)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), mean, rtol=1e-5, atol=1e-6)
    assert len(ensemble.members) == 3


def test_state_dict_round_trip_reloads_the_files(sgdr_fit, tmp_path):
    _, _, _, snapshots, _ = sgdr_fit
    torch.save(snapshots.state_dict(), tmp_path / "state.pt")  # what a checkpoint holds: paths, not weights
    restored = SnapshotEnsemble(num_snapshots=3)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [(s.cycle, s.step) for s in restored.snapshots] == [(2, 16), (3, 24), (4, 32)]
    for a, b in zip(restored.snapshots, snapshots.snapshots):
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_cycle_ends_need_a_schedule(tmp_path):
    with pytest.raises(MisconfigurationException, match="add an LRRangeTest"):
        schedule_cycle_ends(tiny_trainer(tmp_path))


@pytest.mark.parametrize("m", [0, 1, True])
def test_an_ensemble_needs_two_members(m):
    with pytest.raises(ValueError, match="num_snapshots must be >= 2"):
        SnapshotEnsemble(num_snapshots=m)


def test_load_ensemble_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no snapshot files"):
        load_ensemble(tiny_model(), tmp_path)
