"""Snapshot ensembles: one snapshot per finished cycle (SGDR, triangular2), files, the logged ensemble
metric, batches that are not (x, y) pairs, and a wrong batch layout refused before the first step."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_clr import FlatnessProbe, LRRangeTest, SnapshotEnsemble, load_ensemble, schedules
from lightning_clr.callbacks.batches import BatchLayoutError
from lightning_clr.callbacks.ensemble import SnapshotFileError, snapshot_files
from lightning_clr.models import MLP, Classifier
from tests.helpers import LRRecorder, tiny_data, tiny_model, tiny_trainer

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
        trainer = tiny_trainer(tmp_path, max_steps=2, callbacks=[SnapshotEnsemble()])  # no LRRangeTest, no schedule
        trainer.fit(tiny_model(), datamodule=tiny_data())


@pytest.mark.parametrize("m", [0, 1, True])
def test_an_ensemble_needs_two_members(m):
    with pytest.raises(ValueError, match="num_snapshots must be >= 2"):
        SnapshotEnsemble(num_snapshots=m)


def test_load_ensemble_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no snapshot files"):
        load_ensemble(tiny_model(), tmp_path)


# ---------------------------------------------------------------- other schedules, other batch layouts


def test_triangular2_snapshots_at_each_cycle_end(tmp_path):
    finder = LRRangeTest(schedule=schedules.Triangular2(step_size=4), bounds=(0.01, 0.2))  # cycles of 8 steps
    snapshots = SnapshotEnsemble(num_snapshots=2, save_weights=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, snapshots])
    trainer.fit(tiny_model(), datamodule=tiny_data())
    assert snapshots.cycle_ends == [8, 16]
    assert [(s.cycle, s.step) for s in snapshots.snapshots] == [(1, 8), (2, 16)]
    assert trainer.callback_metrics["ensemble/size"].item() == 2


def test_one_cycle_has_no_ensemble_and_says_so(tmp_path):
    finder = LRRangeTest(schedule=schedules.OneCycle(), bounds=(0.01, 0.2))
    snapshots = SnapshotEnsemble(save_weights=False)
    with pytest.warns(UserWarning, match="1 cycle"):
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, snapshots]).fit(tiny_model(), datamodule=tiny_data())
    assert [s.step for s in snapshots.snapshots] == [16]


def _tensors(train: bool):
    data = tiny_data()
    data.setup()
    loader = data.train_dataloader() if train else data.val_dataloader()
    return loader.dataset.tensors


class DictData(L.LightningDataModule):
    """The tiny data as dict batches {"signal": x, "label": y}, or as (x[:, :20], x[:, 20:], y) triples."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout

    def _loader(self, train: bool) -> DataLoader:
        x, y = _tensors(train)
        if self.layout == "dict":
            collate = lambda items: {"signal": torch.stack([i[0] for i in items]), "label": torch.stack([i[1] for i in items])}
        elif self.layout == "tensor":
            collate = lambda items: torch.stack([i[0] for i in items])
        else:
            collate = lambda items: (torch.stack([i[0][:20] for i in items]), torch.stack([i[0][20:] for i in items]),
                                     torch.stack([i[1] for i in items]))
        return DataLoader(TensorDataset(x, y), batch_size=32 if train else 256, shuffle=train, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(False)


class DictClassifier(Classifier):
    def training_step(self, batch, batch_idx):
        return super().training_step((batch["signal"], batch["label"]), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["signal"], batch["label"]), batch_idx)


class TwoInputNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(40, 4, hidden=(32,))

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([left, right], dim=1))


class TwoInputClassifier(Classifier):
    def forward(self, left, right):
        return self.net(left, right)

    def training_step(self, batch, batch_idx):
        left, right, y = batch
        loss = F.cross_entropy(self(left, right), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        left, right, y = batch
        self.log("val/loss", F.cross_entropy(self(left, right), y))


def _sgd():
    from functools import partial

    return partial(torch.optim.SGD, lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    "layout, module, kwargs",
    [
        ("dict", lambda: DictClassifier(MLP(40, 4, hidden=(32,)), _sgd(), num_classes=4), {"inputs": "signal", "target": "label"}),
        ("pair", lambda: TwoInputClassifier(TwoInputNet(), _sgd(), num_classes=4), {"inputs": [0, 1], "target": 2}),
    ],
    ids=["dict-batch", "two-input-model"],
)
def test_ensemble_on_other_batch_layouts(tmp_path, layout, module, kwargs):
    torch.manual_seed(0)
    model = module()
    finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=8, cycle_mult=1), bounds=(0.01, 0.2))
    snapshots = SnapshotEnsemble(num_snapshots=2, **kwargs)
    probe = FlatnessProbe(sigmas=(0.1,), num_batches=1, num_directions=1, **kwargs)
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, snapshots, probe])
    trainer.fit(model, datamodule=DictData(layout))
    assert [s.step for s in snapshots.snapshots] == [8, 16] and [h["step"] for h in probe.history] == [8, 16]
    # the logged score is the mean softmax of the two snapshots, computed by hand on the raw tensors
    x, y = _tensors(False)
    args = (x,) if layout == "dict" else (x[:, :20], x[:, 20:])
    probs = []
    for snap in snapshots.snapshots:
        member = module()
        member.load_state_dict(snap.state)
        with torch.no_grad():
            probs.append(F.softmax(member.eval()(*args), dim=1))
    mean = sum(probs) / 2
    assert trainer.callback_metrics["ensemble/val_loss"].item() == pytest.approx(F.nll_loss(mean.log(), y).item(), rel=1e-5)
    assert trainer.callback_metrics["ensemble/val_acc"].item() == pytest.approx((mean.argmax(1) == y).float().mean().item())
    assert probe.history[-1]["flatness/sigma_0.1"] > 0
    ensemble = load_ensemble(module(), snapshots.dirpath)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(*args), mean, rtol=1e-5, atol=1e-6)


class CountSteps(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches += 1


@pytest.mark.parametrize(
    "layout, module, make, match",
    [
        ("dict", DictClassifier, lambda: SnapshotEnsemble(),
         (r"^SnapshotEnsemble: no input at position 0 in a dict with keys \['signal', 'label'\] "
          r"\(inputs=0, target=1\); set SnapshotEnsemble\(inputs=\.\.\., target=\.\.\.\) .* "
          r"e\.g\. SnapshotEnsemble\(inputs='signal', target='label'\)$")),
        ("dict", DictClassifier, lambda: FlatnessProbe(), r"^FlatnessProbe: no input at position 0 .* e\.g\. FlatnessProbe\(inputs='signal', target='label'\)$"),
        ("tensor", Classifier, lambda: SnapshotEnsemble(), r"^SnapshotEnsemble: no input at position 0 in a Tensor of shape \(32, 40\) .*inputs=<callable"),
        ("pair", TwoInputClassifier, lambda: SnapshotEnsemble(),
         (r"^SnapshotEnsemble: the target is a torch.float32 tensor of shape \(32, 20\), "
          r"not one integer class label .* e\.g\. SnapshotEnsemble\(inputs=\[0, 1\], target=2\)$")),
        ("pair", TwoInputClassifier, lambda: SnapshotEnsemble(inputs=0, target=2), r"^SnapshotEnsemble: model\(\*inputs\) failed \(TypeError: .*\) .*set SnapshotEnsemble\(inputs=\.\.\., target=\.\.\.\)"),
    ],
    ids=["dict-ensemble", "dict-probe", "plain-tensor", "two-inputs-default", "two-inputs-one-given"],
)
def test_wrong_batch_layout_fails_before_the_first_step(tmp_path, layout, module, make, match):
    torch.manual_seed(0)
    net = TwoInputNet() if module is TwoInputClassifier else MLP(40, 4, hidden=(32,))
    model = module(net, _sgd(), num_classes=4)
    before = copy.deepcopy(model.state_dict())
    counter = CountSteps()
    finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=8, cycle_mult=1), bounds=(0.01, 0.2))
    trainer = tiny_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, callbacks=[finder, make(), counter])
    with pytest.raises(BatchLayoutError, match=match) as error:
        trainer.fit(model, datamodule=DictData(layout))
    assert "\n" not in str(error.value)
    assert counter.batches == 0 and trainer.global_step == 0  # not one training batch ran
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_check_draws_no_random_numbers_from_the_run(tmp_path):
    # the layout check reads a batch of the shuffled loader: the run must not notice
    finals = []
    for extra in ([], [SnapshotEnsemble(num_snapshots=2, save_weights=False), FlatnessProbe(num_batches=1, num_directions=1)]):
        model = tiny_model()
        finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=8, cycle_mult=1), bounds=(0.01, 0.2))
        L.seed_everything(3)
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, *extra]).fit(model, datamodule=tiny_data())
        finals.append(model.state_dict())
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_snapshot_recipe_composes_and_ensembles(tmp_path):
    from lightning_clr.cli.main import build
    from tests.conftest import compose_config

    cfg = compose_config(["+recipe=snapshot_mnist1d", "data=synthetic", "trainer.max_epochs=4",
                          "trainer.enable_progress_bar=false", "logger=csv"], tmp_path)
    assert cfg.schedule.num_cycles == 4 and cfg.schedule.cycle_mult == 1.0 and cfg.schedule.floor is None
    assert cfg.callbacks.snapshot.num_snapshots == 3 and "flatness" not in cfg.callbacks
    trainer, model, datamodule, finder = build(cfg)
    recorder = LRRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule)
    (snapshots,) = [c for c in trainer.callbacks if isinstance(c, SnapshotEnsemble)]
    assert snapshots.cycle_ends == [16, 32, 48, 64]  # 16 steps per epoch: one cycle per epoch at 4 epochs
    assert [f.name for f in snapshot_files(snapshots.dirpath)] == [f"cycle_{k}.pt" for k in (1, 2, 3, 4)]
    assert trainer.callback_metrics["ensemble/size"].item() == 3
    base, top = finder.result.base_lr, finder.result.max_lr
    last_step = base + 0.5 * (top - base) * (1 + math.cos(math.pi * 15 / 16))  # step 15 of a 16-step cycle
    assert [lrs[0] for lrs in recorder.lrs[15::16]] == pytest.approx([last_step] * 4, rel=1e-9)  # down to base_lr


# ---------------------------------------------------------------- crafted files: refused on one line, nothing run


def _mark(path: str) -> None:
    """What a crafted pickle would run on load: it leaves a file behind."""
    Path(path).write_text("ran")


class _Foreign:
    """An object whose pickle names a foreign global (``_mark``) to call on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_mark, (str(self.marker),))


@pytest.mark.parametrize("path", ["../../etc/x", "/etc/passwd", "snapshots/../../outside/cycle_1.pt",
                                  "snapshots/cycle_2.pt", "/abs/snapshots/cycle_1.pt.bak", 3])
def test_a_crafted_snapshot_path_in_a_checkpoint_is_refused_on_one_line(path):
    ensemble = SnapshotEnsemble()
    with pytest.raises(SnapshotFileError) as error:  # the checkpoint's entry names cycle 1
        ensemble.load_state_dict({"snapshots": [{"cycle": 1, "step": 8, "path": path}]})
    message = str(error.value)
    assert "\n" not in message and repr(path) in message and "cycle_1.pt without '..'" in message
    assert "resume from a checkpoint that SnapshotEnsemble wrote" in message and ensemble.snapshots == []


def test_a_crafted_snapshot_entry_is_refused_before_any_file_is_read(sgdr_fit, monkeypatch):
    _, _, _, snapshots, _ = sgdr_fit
    entries = snapshots.state_dict()["snapshots"]
    read = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: read.append(args))
    with pytest.raises(SnapshotFileError, match=r"snapshot entry \{'cycle': '2'"):
        SnapshotEnsemble().load_state_dict({"snapshots": [*entries[:1], {**entries[1], "cycle": "2"}]})
    assert read == []


@pytest.mark.parametrize("craft,held", [
    ("zip", "(it names the foreign global tests.test_ensemble._mark)"),  # torch.save of a foreign object
    ("pickle", "(UnpicklingError: "),                                   # a bare pickle, no torch framing
    ("list", "holds list, not a model's state_dict"),
    ("tensor", "holds Tensor, not a model's state_dict"),
    ("numbers", "holds a mapping with values other than tensors"),
])
def test_a_crafted_snapshot_file_is_refused_on_one_line_and_nothing_runs(tmp_path, craft, held):
    folder, marker = tmp_path / "snapshots", tmp_path / "ran"
    folder.mkdir()
    path = folder / "cycle_1.pt"
    if craft == "zip":
        torch.save({"weight": _Foreign(marker)}, path)
    elif craft == "pickle":
        path.write_bytes(pickle.dumps({"weight": _Foreign(marker)}))
    else:
        torch.save({"list": [torch.zeros(2)], "tensor": torch.zeros(2), "numbers": {"weight": 3}}[craft], path)
    for load in (lambda: load_ensemble(tiny_model(), folder),
                 lambda: SnapshotEnsemble().load_state_dict({"snapshots": [{"cycle": 1, "step": 8, "path": str(path)}]})):
        with pytest.raises(SnapshotFileError) as error:
            load()
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"'{path}' ") and held.lower() in message.lower()
        assert "point at the snapshots/ folder of a run trained with SnapshotEnsemble" in message
        assert error.value.__cause__ is None  # one line, no chained traceback
    assert not marker.exists()  # nothing from the file ran
    assert issubclass(SnapshotFileError, ValueError)


@pytest.mark.slow
def test_a_resume_from_a_checkpoint_with_a_crafted_snapshot_path_is_refused(tmp_path):
    from lightning_clr._compat import FIT_WEIGHTS_ONLY

    def trainer(dirpath: Path):
        finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=CYCLE, cycle_mult=1), bounds=(0.01, 0.2))
        return tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, SnapshotEnsemble(dirpath=dirpath)])

    first = trainer(tmp_path / "a")
    first.fit(tiny_model(), datamodule=tiny_data())
    first.save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", map_location="cpu", weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("SnapshotEnsemble")]
    checkpoint["callbacks"][key]["snapshots"][0]["path"] = "../../etc/passwd"
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    with pytest.raises(SnapshotFileError, match=r"the checkpoint names '\.\./\.\./etc/passwd' as the snapshot of cycle 1"):
        trainer(tmp_path / "b").fit(tiny_model(), datamodule=tiny_data(), ckpt_path=tmp_path / "crafted.ckpt",
                                    **FIT_WEIGHTS_ONLY)
