"""A tiny synthetic 1-D classification set: fast, deterministic, learnable in a few steps."""

from __future__ import annotations

import torch

from lightning_clr.data.base import TensorDataModule


class SyntheticDataModule(TensorDataModule):
    """Noisy copies of one random template per class, shaped like MNIST-1D.

    Each sample is ``template[y] + noise * N(0, 1)`` with a random circular shift of up
    to ``max_shift`` samples, so a small CNN or MLP learns it in tens of steps. Uses
    its own ``torch.Generator``: building the data never touches the global RNG.

    Args:
        num_train: training samples.
        num_val: validation samples.
        num_classes: number of classes (templates).
        input_length: samples per signal.
        noise: standard deviation of the additive Gaussian noise.
        max_shift: largest circular shift applied to a template.
        seed: generator seed.
        batch_size, num_workers: see :class:`TensorDataModule`.
    """

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 256,
        num_classes: int = 4,
        input_length: int = 40,
        noise: float = 0.5,
        max_shift: int = 2,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1),
                                 ("num_classes", num_classes, 2), ("input_length", input_length, 4)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.num_train, self.num_val = num_train, num_val
        self.num_classes, self.input_length = num_classes, input_length
        self.noise, self.max_shift, self.seed = noise, max_shift, seed

    def _make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        templates = torch.randn(self.num_classes, self.input_length, generator=g)

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(self.num_classes, (n,), generator=g)
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=g)
            idx = (torch.arange(self.input_length) - shifts[:, None]) % self.input_length
            x = templates[y[:, None], idx] + self.noise * torch.randn(n, self.input_length, generator=g)
            return x, y

        x, y = sample(self.num_train)
        x_val, y_val = sample(self.num_val)
        return x, y, x_val, y_val
