"""The flatness probe: exact on quadratics, restores the weights bit for bit, reproducible, logged."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_clr import FlatnessProbe, LRRangeTest, measure_flatness, schedules
from lightning_clr.callbacks.flatness import filter_normalized_direction
from tests.helpers import tiny_data, tiny_model, tiny_trainer


class Quadratic(nn.Module):
    """``loss = 0.5 * sum h * (w - minimum)^2``: Hessian ``diag(h)``.

    One parameter per curvature tensor, of its shape, every entry starting at ``value``.
    """

    def __init__(self, curvatures: list[torch.Tensor], value: float, minimum: float) -> None:
        super().__init__()
        self.h = curvatures
        self.w = nn.ParameterList(nn.Parameter(torch.full(h.shape, value, dtype=torch.float64)) for h in curvatures)
        self.minimum = minimum

    def loss(self) -> torch.Tensor:
        return sum(0.5 * (h * (w - self.minimum) ** 2).sum() for h, w in zip(self.h, self.w))


def quadratic_loss(model: Quadratic, batch) -> torch.Tensor:
    return model.loss()


SIGMAS = (0.01, 0.1, 0.3)


@pytest.mark.parametrize("minimum", [1.5, 0.0], ids=["at-the-minimum", "off-the-minimum"])
def test_two_one_element_filters_read_the_hessian_exactly(minimum):
    # two separate 1x1 weights of the same magnitude c: filter normalization makes each
    # direction entry +-c, so rise(sigma) = sigma^2/2 * (a c^2 + 1 c^2) for every direction;
    # the +-d pairs cancel the gradient term, so the same holds away from the minimum
    a, c = 9.0, 1.5
    sharp = Quadratic([torch.tensor([[a]]), torch.tensor([[1.0]])], value=c, minimum=minimum)
    round_ = Quadratic([torch.tensor([[1.0]]), torch.tensor([[1.0]])], value=c, minimum=minimum)
    base, rises = measure_flatness(sharp, [None], quadratic_loss, SIGMAS, num_directions=3)
    _, reference = measure_flatness(round_, [None], quadratic_loss, SIGMAS, num_directions=3)
    assert base == pytest.approx(0.5 * (a + 1) * (c - minimum) ** 2, abs=1e-12)
    for sigma in SIGMAS:
        assert rises[sigma] == pytest.approx(0.5 * sigma**2 * c**2 * (a + 1), rel=1e-9)
        assert rises[sigma] / reference[sigma] == pytest.approx((a + 1) / 2, rel=1e-9)  # the Hessian's ratio
    assert rises[0.1] / rises[0.01] == pytest.approx(100.0, rel=1e-9)


def test_one_filter_with_anisotropic_curvature_matches_in_expectation():
    # one filter of n equal weights c with Hessian diag(a,...,a, 1,...,1): the direction is
    # c*sqrt(n)*u, u uniform on the sphere, so E[d'Hd] = c^2 * sum(h) = c^2 n (a + 1) / 2 and
    # sd(d'Hd) / E = 2 (a - 1) / ((a + 1) sqrt(2 (n + 2))). With N directions the mean is off
    # by that / sqrt(N); the test allows 4 standard errors.
    a, c, n, directions = 9.0, 0.7, 8, 200
    h = torch.tensor([[a] * (n // 2) + [1.0] * (n // 2)])
    _, rises = measure_flatness(Quadratic([h], c, c), [None], quadratic_loss, (0.1,), num_directions=directions)
    expected = 0.5 * 0.1**2 * c**2 * n * (a + 1) / 2
    stderr = 2 * (a - 1) / ((a + 1) * math.sqrt(2 * (n + 2))) / math.sqrt(directions)
    assert stderr < 0.03
    assert rises[0.1] == pytest.approx(expected, rel=4 * stderr)
    # an isotropic filter of the same weights reads exactly sum(h) = n, the ratio (a + 1) / 2
    _, iso = measure_flatness(Quadratic([torch.ones(1, n)], c, c), [None], quadratic_loss, (0.1,), num_directions=5)
    assert iso[0.1] == pytest.approx(0.5 * 0.1**2 * c**2 * n, rel=1e-9)
    assert rises[0.1] / iso[0.1] == pytest.approx((a + 1) / 2, rel=4 * stderr)


def test_directions_are_filter_normalized():
    conv = nn.Conv1d(3, 5, 4)
    d_w, d_b = filter_normalized_direction([conv.weight, conv.bias], torch.Generator().manual_seed(0))
    torch.testing.assert_close(d_w.flatten(1).norm(dim=1), conv.weight.detach().flatten(1).norm(dim=1))
    assert torch.count_nonzero(d_b) == 0  # biases are not perturbed (Li et al.)


def _net_with_batchnorm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 40)), nn.Conv1d(1, 8, 5), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 36, 4))


def test_probe_restores_everything_and_is_reproducible():
    data = tiny_data()
    data.setup()
    batches = [b for b, _ in zip(data.train_dataloader(), range(2))]
    net = _net_with_batchnorm()
    net(batches[0][0])  # one training-mode forward: the running stats are no longer the defaults
    net[2].eval()  # a frozen batch norm inside a model in training mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = measure_flatness(net, batches, sigmas=(0.05, 0.2), num_directions=3, seed=0)
    assert [m.training for m in net.modules()] == [True, True, True, False, True, True, True]  # modes restored
    assert all(p.grad is None for p in net.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or buffers changed"
    assert measure_flatness(net, batches, sigmas=(0.05, 0.2), num_directions=3, seed=0) == first
    other = measure_flatness(net, batches, sigmas=(0.05, 0.2), num_directions=3, seed=1)
    assert other[0] == first[0] and other[1] != first[1]  # same unperturbed loss, other directions


@pytest.mark.parametrize("kwargs, match", [
    ({"sigmas": ()}, "sigmas must be positive"),
    ({"sigmas": (0.1, -0.1)}, "sigmas must be positive"),
    ({"num_directions": 0}, "num_directions must be >= 1"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_flatness(nn.Linear(2, 2), [None], lambda m, b: m.weight.sum(), **kwargs)
    with pytest.raises(ValueError, match=match.split()[0]):
        FlatnessProbe(**{k: v for k, v in kwargs.items()})


def test_callback_logs_at_every_cycle_end(tmp_path):
    finder = LRRangeTest(schedule=schedules.SGDR(cycle_steps=8, cycle_mult=1), bounds=(0.01, 0.2))
    probe = FlatnessProbe(sigmas=(0.05, 0.1), num_batches=2, num_directions=2, seed=3)
    model = tiny_model()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[finder, probe], logger=logger)
    trainer.fit(model, datamodule=tiny_data())
    assert [h["step"] for h in probe.history] == [8, 16]
    # the run ends at step 16: measuring the final model again on the probe batches gives the same numbers
    loss, rises = measure_flatness(model, probe._batches, sigmas=(0.05, 0.1), num_directions=2, seed=3)
    assert probe.history[-1] == {"step": 16, "flatness/loss": loss, "flatness/sigma_0.05": rises[0.05],
                                 "flatness/sigma_0.1": rises[0.1]}
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("flatness/loss", "flatness/sigma_0.05", "flatness/sigma_0.1"):
        assert [e.step for e in events.Scalars(tag)] == [8, 16]
    assert events.Scalars("flatness/sigma_0.1")[-1].value == pytest.approx(rises[0.1], rel=1e-6)


def test_probe_batches_survive_a_checkpoint(tmp_path):
    probe = FlatnessProbe(num_batches=1)
    probe._batches = [(torch.randn(3, 40), torch.tensor([0, 1, 2]))]
    probe.history = [{"step": 8, "flatness/loss": 0.5}]
    torch.save(probe.state_dict(), tmp_path / "state.pt")
    restored = FlatnessProbe(num_batches=1)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # as Trainer.fit(weights_only=True)
    assert restored.history == probe.history
    assert all(torch.equal(a, b) for a, b in zip(restored._batches[0], probe._batches[0]))
