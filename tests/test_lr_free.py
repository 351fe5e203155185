"""Schedule-Free and multiplier-lr optimizers: detection, eval weights, checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lightning_clr.range_test.lr_free import ScheduleFreeModes, eval_weights, is_schedule_free, multiplier_lr_reason

schedulefree = pytest.importorskip("schedulefree")
prodigyopt = pytest.importorskip("prodigyopt")


def _trained(optimizer_cls, steps: int = 5, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = optimizer_cls(model.parameters(), **kwargs)
    optimizer.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("cls", [schedulefree.AdamWScheduleFree, schedulefree.SGDScheduleFree,
                                 schedulefree.RAdamScheduleFree])
def test_schedule_free_optimizers_are_recognised(cls):
    _, optimizer = _trained(cls, lr=0.01)
    assert is_schedule_free(optimizer)
    assert multiplier_lr_reason(optimizer) is None


def test_plain_optimizers_are_neither():
    model = nn.Linear(2, 2)
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.AdamW(model.parameters())):
        assert not is_schedule_free(optimizer)
        assert multiplier_lr_reason(optimizer) is None


def test_prodigy_is_refused_with_its_name_its_lr_and_what_to_do():
    optimizer = prodigyopt.Prodigy(nn.Linear(2, 2).parameters(), lr=1.0)
    reason = multiplier_lr_reason(optimizer)
    assert reason is not None and reason.startswith("Prodigy estimates its own step size and its lr (1)")
    assert "without LRRangeTest" in reason and "SGD, Adam or AdamW" in reason and "\n" not in reason


def test_eval_weights_are_what_eval_sets_and_the_parameters_do_not_move():
    model, optimizer = _trained(schedulefree.AdamWScheduleFree, lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    computed = eval_weights(optimizer)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # nothing moved
    optimizer.eval()
    assert all(torch.equal(computed[p], p.detach()) for p in model.parameters())
    assert any(not torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))  # x differs from y


def test_a_checkpoint_stores_the_eval_weights_and_an_eval_mode_optimizer():
    model, optimizer = _trained(schedulefree.AdamWScheduleFree, lr=0.01)
    names = {p: n for n, p in model.named_parameters()}
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    ScheduleFreeModes(optimizer).checkpoint(checkpoint, checkpoint["state_dict"], names)
    assert all(g["train_mode"] for g in optimizer.param_groups)  # the live optimizer stays in train mode
    assert [g["train_mode"] for g in checkpoint["optimizer_states"][0]["param_groups"]] == [False]
    # loading the checkpoint and switching to train mode gives back the live y, up to rounding
    fresh, fresh_opt = _trained(schedulefree.AdamWScheduleFree, steps=0, lr=0.01)
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh_opt.load_state_dict(checkpoint["optimizer_states"][0])
    optimizer.eval()
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))  # stored x == eval x
    optimizer.train()
    fresh_opt.train()
    for a, b in zip(fresh.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_eval_recomputes_batch_norm_statistics_at_the_eval_weights():
    model, optimizer = _trained(schedulefree.AdamWScheduleFree, lr=0.05, steps=20)
    bn = model[1]
    batches = [torch.randn(16, 4) for _ in range(3)]
    stale = bn.running_mean.clone()
    ScheduleFreeModes(optimizer, bn_batches=2).eval(model, lambda: iter(batches), model)
    # the statistics are the plain average over the first two batches, at the eval weights
    first = model[0]
    expected = torch.stack([first(b).mean(0) for b in batches[:2]]).mean(0).detach()
    torch.testing.assert_close(bn.running_mean, expected)
    assert not torch.allclose(bn.running_mean, stale)
    assert bn.momentum == 0.1  # the layer's own momentum is back


class _ProdigyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return prodigyopt.Prodigy(self.parameters(), lr=1.0)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)), batch_size=8)


@pytest.mark.parametrize("bounds", [None, (0.1, 1.0)], ids=["sweep", "bounds"])
def test_prodigy_is_refused_in_fit_before_any_step(bounds, tmp_path):
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from lightning_clr import LRRangeTest
    from tests.helpers import tiny_trainer

    model = _ProdigyModule()
    trainer = tiny_trainer(tmp_path, callbacks=[LRRangeTest(bounds=bounds, progress_bar=False)], max_steps=2)
    with pytest.raises(MisconfigurationException) as err:
        trainer.fit(model)
    reason = multiplier_lr_reason(trainer.optimizers[0])
    assert str(err.value) == f"LRRangeTest: {reason}" and "\n" not in str(err.value)
    assert model.steps == 0 and trainer.global_step == 0
