"""MNIST-1D (Greydanus 2020, arXiv 2011.14439): a 40-sample 1-D digit task.

The set is generated procedurally by ``mnist1d.data.make_dataset`` (offline, about a
second for the default 5000 samples), so nothing is downloaded. It separates
models and optimizers about as clearly as MNIST/CIFAR do, at a thousandth of the cost.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import torch

from lightning_clr.data.base import TensorDataModule


class MNIST1DDataModule(TensorDataModule):
    """MNIST-1D, generated offline.

    Args:
        num_samples: total samples (train + test) to generate.
        train_split: fraction used for training; the rest is the validation set.
        seed: generator seed (the data set is a pure function of its arguments).
        data_dir: optional folder to cache the generated arrays in (``.npz``); must
            exist. ``None`` keeps everything in memory.
        batch_size, num_workers: see :class:`TensorDataModule`.

    Example::

        dm = MNIST1DDataModule(batch_size=100)
        dm.setup()
        x, y = next(iter(dm.train_dataloader()))   # x: (100, 40) float32, y: (100,)
    """

    num_classes = 10
    input_length = 40

    def __init__(
        self,
        num_samples: int = 5000,
        train_split: float = 0.8,
        seed: int = 42,
        data_dir: str | None = None,
        batch_size: int = 100,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if num_samples < 20:
            raise ValueError(f"num_samples must be >= 20, got {num_samples}")
        if not 0.0 < train_split < 1.0:
            raise ValueError(f"train_split must be in (0, 1), got {train_split}")
        if data_dir is not None and not Path(data_dir).is_dir():
            raise FileNotFoundError(
                f"data_dir '{data_dir}' does not exist; create it, or set data_dir=null "
                "to generate MNIST-1D in memory"
            )
        self.num_samples = num_samples
        self.train_split = train_split
        self.seed = seed
        self.data_dir = data_dir

    def _args(self) -> dict:
        from mnist1d.data import get_dataset_args

        args = get_dataset_args(as_dict=True)
        args.update(num_samples=self.num_samples, train_split=self.train_split, seed=self.seed)
        args.pop("url", None)
        return args

    def _generate(self) -> dict[str, np.ndarray]:
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView

        data = make_dataset(ObjectView(self._args()))
        return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}

    def _make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.data_dir is None:
            arrays = self._generate()
        else:
            key = hashlib.sha256(json.dumps(self._args(), sort_keys=True).encode()).hexdigest()[:12]
            path = Path(self.data_dir) / f"mnist1d-{key}.npz"
            if path.exists():
                with np.load(path, allow_pickle=False) as f:
                    arrays = {k: f[k] for k in f.files}
            else:
                arrays = self._generate()
                tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.tmp.npz")
                np.savez(tmp, **arrays)
                tmp.replace(path)  # atomic: concurrent runs never read a half-written file
        x, y = torch.as_tensor(arrays["x"], dtype=torch.float32), torch.as_tensor(arrays["y"]).long()
        xt, yt = torch.as_tensor(arrays["x_test"], dtype=torch.float32), torch.as_tensor(arrays["y_test"]).long()
        return x, y, xt, yt
