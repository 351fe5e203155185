"""CIFAR-10 (Krizhevsky 2009): 50,000 training and 10,000 test images, 32x32x3, 10 classes.

:class:`CIFAR10DataModule` reads the standard ``cifar-10-batches-py`` folder (the python version
from the CIFAR page, which is also what ``torchvision.datasets.CIFAR10`` unpacks) without
torchvision. Only ``download=True`` uses torchvision (``pip install "lightning-clr[vision]"``).
The test set is the validation set, as in the papers the recipes reproduce.

Images are kept as ``uint8`` in memory (150 MB) and turned into normalized float batches on the
training device, in ``on_after_batch_transfer``: random crop with 4-pixel zero padding and
horizontal flip for training batches (``augment``), then ``(x / 255 - mean) / std``.

The batch files are pickles, and ``pickle.load`` runs whatever code a crafted file names.
They are read with :class:`BatchUnpickler`, which admits only what the format holds: a dict
of bytes, strings, ints and lists, and numpy arrays of numbers. Anything else (``os.system``,
``builtins.exec``, any other class) is refused before it is called.
:class:`FakeCIFAR10DataModule` has the same shapes, pipeline and arguments on generated
images, for tests and smoke runs that must not touch the disk or the network.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lightning_clr.data.base import DataFileError, TensorDataModule

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)   # per-channel mean of the training images, on a 0-1 scale
CIFAR10_STD = (0.2470, 0.2435, 0.2616)    # per-channel standard deviation, on a 0-1 scale
AUGMENTATIONS = ("none", "flip", "crop_flip")
_FOLDER = "cifar-10-batches-py"
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array rebuild function, under any numpy version
#: the only globals a CIFAR-10 batch pickle refers to (numpy 1 and 2 spell the module differently)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 writes a bytes object from Python 3
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, bytes, strings, numbers and numpy arrays.

    Raises:
        pickle.UnpicklingError: the stream names any other global (a function to call, a class).

    Example::

        with open("cifar-10-batches-py/data_batch_1", "rb") as f:
            entry = BatchUnpickler(f, encoding="bytes").load()
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return allowed


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 (N, 3, 32, 32)`` and labels ``int64 (N,)`` of one ``cifar-10-batches-py`` file.

    Raises:
        DataFileError: the file is not a CIFAR-10 batch (refused content, wrong structure,
            truncated); one line naming the file and the fix.
    """
    try:
        entry = BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = entry[b"data"], entry[b"labels"]
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "iub":
            raise ValueError(f"b'data' is a {type(data).__name__} of {getattr(data, 'dtype', '?')}, not an integer array")
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(labels, dtype=np.int64)
        if y.shape != (len(x),):
            raise ValueError(f"{len(x)} images but labels of shape {y.shape}")
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, EOFError, IndexError, AttributeError) as err:
        raise DataFileError(
            f"data.data_dir: {path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}); unpack the original "
            "cifar-10-python.tar.gz there, or set data.download=true in an empty data_dir"
        ) from None
    return x, y


def random_crop_flip(x: torch.Tensor, pad: int = 4, crop: bool = True, flip: bool = True) -> torch.Tensor:
    """Per-image random ``pad``-pixel zero-padded crop and horizontal flip of an ``(N, C, H, W)`` batch.

    Uses the global torch generator of ``x``'s device (seeded by ``seed_everything``).
    """
    n, _, h, w = x.shape
    device = x.device
    rows = torch.arange(h, device=device).expand(n, h)
    cols = torch.arange(w, device=device).expand(n, w)
    if crop:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = rows + torch.randint(0, 2 * pad + 1, (n, 1), device=device)
        cols = cols + torch.randint(0, 2 * pad + 1, (n, 1), device=device)
    if flip:
        mirror = torch.rand(n, 1, device=device) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=device)[None, :, None, None]
    return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class CIFAR10DataModule(TensorDataModule):
    """CIFAR-10 from the ``cifar-10-batches-py`` folder, normalized and augmented on the device.

    ``input_length`` (32, the image side) and ``num_classes`` are read by the entry point to
    shape the model.

    Args:
        data_dir: the ``cifar-10-batches-py`` folder or a folder containing it.
        download: fetch the data set with torchvision into ``data_dir`` when it is missing
            (needs the ``vision`` extra and network access).
        augment: ``"crop_flip"`` (4-pixel padded random crop and flip, the standard for ResNets),
            ``"flip"`` (mirror only) or ``"none"``; applied to training batches only.
        mean: per-channel mean subtracted on a 0-1 scale.
        std: per-channel divisor on a 0-1 scale; ``1/255`` keeps Caffe's 0-255 scale.
        batch_size, num_workers: see :class:`~lightning_clr.data.base.TensorDataModule`.

    Raises:
        ValueError: for an unknown ``augment`` or malformed ``mean``/``std``.

    Example::

        dm = CIFAR10DataModule(data_dir="data", batch_size=128)   # data/cifar-10-batches-py/
        trainer.fit(model, datamodule=dm)
    """

    num_classes = 10
    input_length = 32

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        augment: str = "crop_flip",
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if len(mean) != 3 or len(std) != 3 or any(not float(s) > 0 for s in std):
            raise ValueError(f"mean and std need 3 values each (std > 0), got mean={list(mean)}, std={list(std)}")
        self.data_dir, self.download, self.augment = data_dir, download, augment
        self.mean = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)

    # ------------------------------------------------------------------ files

    def _folder(self) -> Path | None:
        root = Path(self.data_dir)
        for candidate in (root, root / _FOLDER):
            if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
                return candidate
        return None

    def prepare_data(self) -> None:
        if self._folder() is not None or not self.download:
            return
        try:
            from torchvision.datasets import CIFAR10
        except Exception as err:  # ImportError, or a torchvision built for another torch
            raise RuntimeError(
                f"download=True needs a working torchvision ({err}); install it with "
                f'pip install "lightning-clr[vision]", or unpack cifar-10-python.tar.gz into {self.data_dir}'
            ) from err
        CIFAR10(root=self.data_dir, train=True, download=True)

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x_train, y_train, x_val, y_val`` with images as ``uint8 (N, 3, 32, 32)``."""
        folder = self._folder()
        if folder is None:
            raise FileNotFoundError(
                f"CIFAR-10 not found in '{Path(self.data_dir).resolve()}' (expected {_FOLDER}/data_batch_1..5 and "
                "test_batch); unpack cifar-10-python.tar.gz there, point data_dir at it, or set download=true"
            )

        def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
            xs, ys = zip(*(read_batch(folder / name) for name in names))
            return np.concatenate(xs), np.concatenate(ys)

        x, y = read([f"data_batch_{i}" for i in range(1, 6)])
        x_val, y_val = read(["test_batch"])
        return x, y, x_val, y_val

    def _make(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, x_val, y_val = self._load()
        return (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y),
                torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val))

    # ------------------------------------------------------------------ batches

    def preprocess(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        """``uint8`` images to normalized floats, augmented when ``train``.

        Use this on raw batches outside a Trainer (e.g. before an ensemble's ``forward``).
        """
        x = x.float().div_(255.0)
        if train and self.augment != "none":
            x = random_crop_flip(x, crop=self.augment == "crop_flip")
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        if x.dtype != torch.uint8:
            return batch  # already preprocessed
        train = self.trainer is not None and self.trainer.training
        return self.preprocess(x, train=train), y


class FakeCIFAR10DataModule(CIFAR10DataModule):
    """Generated CIFAR-shaped images: one random template per class plus noise, as ``uint8``.

    Same arguments (``data_dir`` and ``download`` are accepted and ignored, so that
    ``data=fake_cifar10`` replaces ``data=cifar10`` under any recipe), shapes and batch pipeline
    as :class:`CIFAR10DataModule`; nothing is read or downloaded.

    Args:
        num_train: training images.
        num_val: validation images.
        seed: generator seed (the global RNG is not touched).
        noise: standard deviation of the per-pixel noise, in 0-255 units.
        **kwargs: the arguments of :class:`CIFAR10DataModule`.
    """

    def __init__(self, num_train: int = 256, num_val: int = 128, seed: int = 0, noise: float = 40.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_train < 1 or num_val < 1:
            raise ValueError(f"num_train ({num_train}) and num_val ({num_val}) must be >= 1")
        self.num_train, self.num_val, self.seed, self.noise = num_train, num_val, seed, noise

    def prepare_data(self) -> None:
        pass

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        g = torch.Generator().manual_seed(self.seed)
        templates = torch.rand(self.num_classes, 3, 32, 32, generator=g) * 255

        def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
            y = torch.randint(self.num_classes, (n,), generator=g)
            x = templates[y] + self.noise * torch.randn(n, 3, 32, 32, generator=g)
            return x.clamp(0, 255).round().to(torch.uint8).numpy(), y.numpy()

        x, y = sample(self.num_train)
        x_val, y_val = sample(self.num_val)
        return x, y, x_val, y_val
