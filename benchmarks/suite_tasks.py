"""The tasks of ``suite.py``: offline data sets, networks, one LightningModule, one training.

Every task is a ``SuiteTask``: a family (the unit of leave-one-family-out), a data set
built once per process, a network, an optimizer, a batch size, a number of epochs and a
validation metric. All data are offline: generated, scikit-learn's bundled sets
(``load_digits``, ``load_diabetes``, ``load_breast_cancer``), ``mnist1d.make_dataset``
and character-level text from the Python standard library's docstrings.

A run seeds once (weights, dropout, batch order); the data set itself is fixed (seed 0), and so
is the network the fine-tuning task starts from (pre-trained once per process from seed 0).
The metric is read after the last epoch on the whole validation set (one batch).

Besides the task's own optimizer, every task trains with the two one-line alternatives a
user would pick instead of a range test (:func:`fit_alternative`): Schedule-Free AdamW at
its default LR and Prodigy with a cosine annealing, both keeping the task's weight decay.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import trainer
from lion_pytorch import Lion
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lightning_clr import LRRangeTest
from lightning_clr.models import CNN1D

# ----------------------------------------------------------------------------- data


@dataclass
class Arrays:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class ArrayData(L.LightningDataModule):
    """Train/validation tensors; the validation set is one batch."""

    def __init__(self, arrays: Arrays, batch_size: int) -> None:
        super().__init__()
        self.arrays, self.batch_size = arrays, batch_size

    def train_dataloader(self) -> DataLoader:
        a = self.arrays
        return DataLoader(TensorDataset(a.x_train, a.y_train), batch_size=self.batch_size, shuffle=True,
                          drop_last=True)

    def val_dataloader(self) -> DataLoader:
        a = self.arrays
        return DataLoader(TensorDataset(a.x_val, a.y_val), batch_size=len(a.x_val))


def _split(x: np.ndarray, y: np.ndarray, val_frac: float = 0.2, *, x_dtype=torch.float32,
           y_dtype=torch.long) -> Arrays:
    order = np.random.default_rng(0).permutation(len(x))
    n_val = round(len(x) * val_frac)
    val, tr = order[:n_val], order[n_val:]
    return Arrays(torch.tensor(x[tr], dtype=x_dtype), torch.tensor(y[tr], dtype=y_dtype),
                  torch.tensor(x[val], dtype=x_dtype), torch.tensor(y[val], dtype=y_dtype))


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-8)


def digits_images() -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split((d.images / 16.0)[:, None].astype(np.float32), d.target)


def digits_flat() -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split((d.data / 16.0).astype(np.float32), d.target)


def digits_autoencoder() -> Arrays:
    a = digits_flat()
    return Arrays(a.x_train, a.x_train, a.x_val, a.x_val)


def cancer() -> Arrays:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _split(_standardize(d.data), d.target)


def diabetes() -> Arrays:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return _split(_standardize(d.data), _standardize(d.target)[:, None], y_dtype=torch.float32)


def friedman() -> Arrays:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2500, n_features=10, noise=1.0, random_state=0)
    return _split(x, ((y - y.mean()) / y.std())[:, None], y_dtype=torch.float32)


def blobs() -> Arrays:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=20, n_informative=10, n_redundant=4, n_classes=5,
                               n_clusters_per_class=2, class_sep=1.0, flip_y=0.05, random_state=0)
    return _split(_standardize(x), y)


def mnist1d_signals() -> Arrays:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 3000, 0.8, 0
    with contextlib.redirect_stdout(io.StringIO()):
        d = make_dataset(args)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]])
    return _split(x, y)


def random_walk_signals(num_samples: int = 5000, template_seed: int = 1) -> Arrays:
    """MNIST-1D's generator (shifts, scales, shears, correlated noise) applied to ten random-walk
    templates instead of its digit outlines: another 1-D classification task with the same
    transformations and harder classes. 80% train, 20% validation, as ``make_dataset`` splits."""
    from mnist1d.data import get_dataset_args, get_templates, make_dataset

    digits = get_templates()
    walks = np.cumsum(np.random.default_rng(template_seed).normal(size=digits["x"].shape), axis=1)
    walks -= walks.mean(1, keepdims=True)
    walks *= 0.45 / np.abs(walks).max(1, keepdims=True)  # the digit outlines' amplitude
    walks[:, 0] = walks[:, -1] = 0.0  # and, like them, zero at both ends
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, 0.8, 0
    with contextlib.redirect_stdout(io.StringIO()):
        d = make_dataset(args, template={"x": walks, "t": digits["t"], "y": digits["y"]})
    return Arrays(torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"]),
                  torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"]))


def mnist1d_autoencoder() -> Arrays:
    a = mnist1d_signals()
    return Arrays(a.x_train, a.x_train, a.x_val, a.x_val)


def quantiles() -> Arrays:
    """Six classes of nested shells around the origin in 10 dimensions (``make_gaussian_quantiles``)."""
    from sklearn.datasets import make_gaussian_quantiles

    x, y = make_gaussian_quantiles(n_samples=3000, n_features=10, n_classes=6, random_state=0)
    return _split(_standardize(x), y)


def pattern_sequences() -> Arrays:
    """Token sequences (vocabulary 12, length 24); the label says whether token 1 occurs more
    often in the first half than in the second, or as often (3 classes): it needs positions."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, size=(1500, 24))
    first, second = (x[:, :12] == 1).sum(1), (x[:, 12:] == 1).sum(1)
    y = np.sign(first - second) + 1
    return _split(x, y, x_dtype=torch.long)


DOC_MODULES = ("argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "email.message",
               "functools", "heapq", "inspect", "itertools", "json", "logging", "os", "pathlib", "pickle",
               "random", "re", "shutil", "socket", "statistics", "string", "subprocess", "tarfile", "textwrap",
               "threading", "typing", "unittest", "urllib.parse", "zipfile")
SEQ_LEN = 64


@functools.lru_cache(maxsize=1)
def docstring_text() -> str:
    """Docstrings of a fixed list of standard-library modules and their members, printable ASCII."""
    parts = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if getattr(obj, "__module__", None) == module.__name__ and (doc := inspect.getdoc(obj)):
                parts.append(doc)
    text = "\n\n".join(parts)
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)


VOCAB = 96  # "\n" and the 95 printable ASCII characters


def char_sequences(num_train: int, num_val: int) -> Arrays:
    """Non-overlapping windows of ``SEQ_LEN + 1`` characters; the input is the first ``SEQ_LEN``."""
    codes = np.array([0 if c == "\n" else ord(c) - 31 for c in docstring_text()], dtype=np.int64)
    n = len(codes) // (SEQ_LEN + 1)
    windows = codes[: n * (SEQ_LEN + 1)].reshape(n, SEQ_LEN + 1)
    windows = windows[np.random.default_rng(0).permutation(n)][: num_train + num_val]
    tr, val = windows[:num_train], windows[num_train:]
    return Arrays(torch.tensor(tr[:, :-1]), torch.tensor(tr[:, 1:]), torch.tensor(val[:, :-1]),
                  torch.tensor(val[:, 1:]))


# ----------------------------------------------------------------------------- networks


class ConvNet(nn.Module):
    """Three 3x3 convolutions, no normalisation, on 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)

    def forward(self, x):
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class ResNet(nn.Module):
    """A stem and two residual blocks with BatchNorm, on 8x8 digits."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(Block(width), nn.MaxPool2d(2), Block(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int, dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, outputs))


class CharGRU(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed, self.rnn, self.out = nn.Embedding(VOCAB, 32), nn.GRU(32, hidden, batch_first=True), nn.Linear(
            hidden, VOCAB)

    def forward(self, x):
        return self.out(self.rnn(self.embed(x))[0])


class Transformer(nn.Module):
    """Post-norm encoder layers (torch's default) with learned positions; ``causal`` makes it an LM."""

    def __init__(self, vocab: int, length: int, outputs: int, *, causal: bool, width: int = 64, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.causal = causal
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, outputs)

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1]) if self.causal else None
        h = self.encoder(self.embed(x) + self.pos[: x.shape[1]], mask=mask, is_causal=self.causal)
        return self.out(h if self.causal else h.mean(1))


class ViT(nn.Module):
    """A vision transformer on 8x8 digits: ``patch`` x ``patch`` patches embedded by a strided
    convolution, a class token, learned positions, pre-LayerNorm encoder blocks (torch's
    ``norm_first=True``), a final LayerNorm and a linear head on the class token."""

    def __init__(self, patch: int = 2, width: int = 32, layers: int = 2, heads: int = 4, classes: int = 10,
                 image: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (batch, patches, width)
        h = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.encoder(h)[:, 0]))


class ConvBN(nn.Module):
    """Three 3x3 convolutions with BatchNorm on 8x8 digits and a linear head."""

    def __init__(self, classes: int) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(1, 16), *conv(16, 32), nn.MaxPool2d(2), *conv(32, 32),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.body(x))


PRETRAIN_EPOCHS = 15


@functools.cache
def pretrained_features() -> dict[str, torch.Tensor]:
    """The convolutions of the library's 1-D CNN trained on MNIST-1D's digits (Adam at 3e-3, batch 32,
    ``PRETRAIN_EPOCHS`` epochs, seed 0; about 80% validation accuracy), once per process; the global
    RNG is left as it was."""
    a = _arrays(mnist1d_signals)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CNN1D()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(PRETRAIN_EPOCHS):
            for idx in torch.randperm(len(a.x_train)).split(32):
                optimizer.zero_grad()
                F.cross_entropy(net(a.x_train[idx]), a.y_train[idx]).backward()
                optimizer.step()
    return {k: v.detach().clone() for k, v in net.features.state_dict().items()}


def finetune_net() -> CNN1D:
    """The pre-trained convolutions (:func:`pretrained_features`) under a new head drawn from the global RNG."""
    net = CNN1D()
    net.features.load_state_dict(pretrained_features())
    return net


# ----------------------------------------------------------------------------- the module


class Criterion(nn.Module):
    """The task's loss on (output, target): cross-entropy (over the last axis) or MSE."""

    def __init__(self, kind: str, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.kind, self.label_smoothing = kind, label_smoothing

    def forward(self, out, y):
        if self.kind == "mse":
            return F.mse_loss(out, y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), label_smoothing=self.label_smoothing)


class SuiteModule(L.LightningModule):
    """Trains ``net`` with ``criterion``; logs ``val/loss`` (plain loss, no label smoothing) and,
    for classifiers, ``val/acc``.

    ``optimizer(params)`` builds the optimizer; ``scheduler(optimizer)``, if given, a scheduler
    stepped after every optimizer step. ``optimizer_steps`` counts every step the optimizer
    takes, a range test's included.
    """

    def __init__(self, net: nn.Module, criterion: Criterion, optimizer: Callable, classify: bool,
                 scheduler: Callable | None = None) -> None:
        super().__init__()
        self.net, self.criterion, self.optimizer_factory, self.classify = net, criterion, optimizer, classify
        self.scheduler_factory = scheduler
        self.plain = Criterion(criterion.kind)
        self.optimizer_steps = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.criterion(self.net(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        self.log("val/loss", self.plain(out, y))
        if self.classify:
            self.log("val/acc", (out.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        optimizer.register_step_post_hook(self._count_step)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def _count_step(self, optimizer, args, kwargs) -> None:
        self.optimizer_steps += 1


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite.

    Attributes:
        name: key used on the command line and in the anchor cache.
        family: the model family; leave-one-family-out holds out all tasks of one family.
        data: builds the data set (cached per process).
        net: builds the network from the global RNG.
        optimizer: torch optimizer class; ``options`` its arguments other than ``lr``.
        batch_size: training batch size.
        epochs: training budget of every row (``--epochs`` overrides it).
        metric: ``"val/acc"`` (higher is better) or ``"val/loss"`` (lower is better).
        loss: ``"ce"`` or ``"mse"``; ``label_smoothing`` for the training loss.
        grid: lowest and highest LR of the oracle's half-decade grid (widened if the best is at an edge).
        note: what else the task exercises.
    """

    name: str
    family: str
    data: Callable[[], Arrays]
    net: Callable[[], nn.Module]
    optimizer: type[torch.optim.Optimizer]
    options: dict = field(default_factory=dict)
    batch_size: int = 32
    epochs: int = 6
    metric: str = "val/loss"
    loss: str = "ce"
    label_smoothing: float = 0.0
    grid: tuple[float, float] = (1e-3, 1.0)
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "val/acc"

    @property
    def optimizer_label(self) -> str:
        o = self.optimizer.__name__
        if o == "SGD":
            o = "SGD Nesterov" if self.options.get("nesterov") else ("SGD momentum" if self.options.get("momentum")
                                                                     else "SGD")
        return o + (f", wd {self.options['weight_decay']:g}" if self.options.get("weight_decay") else "")

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last incomplete batch is dropped)."""
        return len(_arrays(self.data).x_train) // self.batch_size

    def datamodule(self) -> ArrayData:
        return ArrayData(_arrays(self.data), self.batch_size)

    def model(self, lr: float | None = None) -> SuiteModule:
        factory = partial(self.optimizer, lr=1e-3 if lr is None else lr, **self.options)
        return SuiteModule(self.net(), Criterion(self.loss, self.label_smoothing), factory,
                           classify=self.loss == "ce")


TASKS: dict[str, SuiteTask] = {t.name: t for t in [
    SuiteTask("conv-digits", "conv (no norm)", digits_images, ConvNet, torch.optim.SGD, {"momentum": 0.9},
              batch_size=32, epochs=6, metric="val/acc", grid=(1e-3, 1.0)),
    SuiteTask("resnet-digits", "residual conv + BN", digits_images, ResNet, torch.optim.SGD,
              {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, batch_size=128, epochs=8,
              metric="val/acc", grid=(1e-3, 3.0)),
    SuiteTask("mlp-mnist1d", "MLP classifier", mnist1d_signals, partial(mlp, 40, (128, 128), 10, 0.2),
              torch.optim.AdamW, {"weight_decay": 0.01}, batch_size=32, epochs=6, metric="val/acc",
              label_smoothing=0.1, grid=(1e-4, 0.1), note="dropout 0.2, label smoothing 0.1"),
    SuiteTask("mlp-blobs", "MLP classifier", blobs, partial(mlp, 20, (64, 64), 5), torch.optim.RMSprop,
              batch_size=64, epochs=6, metric="val/loss", grid=(1e-5, 0.03)),
    SuiteTask("mlp-friedman", "MLP regressor", friedman, partial(mlp, 10, (64, 64), 1), torch.optim.SGD,
              batch_size=32, epochs=6, loss="mse", grid=(1e-3, 1.0)),
    SuiteTask("mlp-diabetes", "MLP regressor", diabetes, partial(mlp, 10, (32,), 1), torch.optim.Adam,
              batch_size=8, epochs=6, loss="mse", grid=(1e-5, 0.1)),
    SuiteTask("softmax-digits", "convex (linear)", digits_flat, partial(nn.Linear, 64, 10), torch.optim.SGD,
              batch_size=512, epochs=40, grid=(0.01, 30.0), note="multinomial logistic regression"),
    SuiteTask("logreg-cancer", "convex (linear)", cancer, partial(nn.Linear, 30, 2), torch.optim.SGD,
              {"momentum": 0.9}, batch_size=8, epochs=4, grid=(1e-4, 1.0), note="logistic regression"),
    SuiteTask("gru-lm", "GRU language model", partial(char_sequences, 1024, 384), CharGRU, torch.optim.SGD,
              batch_size=32, epochs=4, grid=(0.03, 30.0), note="characters of stdlib docstrings"),
    SuiteTask("transformer-clf", "transformer classifier", pattern_sequences,
              partial(Transformer, 12, 24, 3, causal=False, width=32), torch.optim.Adam, batch_size=64, epochs=4,
              grid=(1e-5, 0.01), note="dropout 0.1; positions decide the label"),
    SuiteTask("transformer-lm", "causal transformer LM", partial(char_sequences, 640, 256),
              partial(Transformer, VOCAB, SEQ_LEN, VOCAB, causal=True, width=48), torch.optim.AdamW,
              {"weight_decay": 0.1},
              batch_size=16, epochs=3, grid=(1e-5, 0.03), note="characters of stdlib docstrings"),
    SuiteTask("ae-digits", "autoencoder", digits_autoencoder, partial(mlp, 64, (32, 8, 32), 64), torch.optim.Adam,
              batch_size=32, epochs=8, loss="mse", grid=(1e-5, 0.1)),
    SuiteTask("ae-mnist1d", "autoencoder", mnist1d_autoencoder, partial(mlp, 40, (64, 10, 64), 40),
              torch.optim.RMSprop, batch_size=64, epochs=6, loss="mse", grid=(1e-5, 0.03)),
    SuiteTask("vit-digits", "vision transformer", digits_images, ViT, torch.optim.AdamW, {"weight_decay": 0.05},
              batch_size=32, epochs=8, metric="val/acc", grid=(1e-4, 0.1),
              note="2x2 patches, class token, pre-LayerNorm blocks"),
    SuiteTask("finetune-walks", "fine-tuning", partial(random_walk_signals, 1500), finetune_net, torch.optim.AdamW,
              {"weight_decay": 0.01}, batch_size=32, epochs=5, metric="val/acc", grid=(1e-4, 0.1),
              note="1-D CNN pre-trained on MNIST-1D, new head, every layer trained on random walks"),
    SuiteTask("lion-digits", "Lion (sign updates)", digits_images, partial(ConvBN, 10), Lion, {"weight_decay": 0.1},
              batch_size=32, epochs=6, metric="val/acc", grid=(1e-5, 0.01), note="conv + BatchNorm"),
    SuiteTask("short-digits", "short run", digits_flat, partial(mlp, 64, (128,), 10), torch.optim.SGD,
              {"momentum": 0.9, "nesterov": True}, batch_size=64, epochs=4, grid=(1e-3, 3.0),
              note="88 optimizer steps in all"),
    SuiteTask("smooth-quantiles", "label smoothing + heavy wd", quantiles, partial(mlp, 10, (128, 128), 6),
              torch.optim.SGD, {"momentum": 0.9, "weight_decay": 5e-3}, batch_size=32, epochs=6, metric="val/acc",
              label_smoothing=0.2, grid=(1e-3, 1.0), note="label smoothing 0.2, weight decay 5e-3"),
]}


#: tasks outside the suite (no default was chosen on them): the library's 1-D CNN with SGD on
#: MNIST-1D's transformations of ten random-walk templates (``benchmarks/snapshots.py``, ``shallow.py``)
OTHER_TASKS: dict[str, SuiteTask] = {
    "cnn-walks": SuiteTask("cnn-walks", "1-D CNN", random_walk_signals, CNN1D, torch.optim.SGD, {"momentum": 0.9},
                           batch_size=100, epochs=20, metric="val/acc",
                           note="MNIST-1D's generator on random-walk templates; the loss plateaus at the start"),
}


@functools.cache
def _arrays(data: Callable[[], Arrays]) -> Arrays:
    """A task's data set, built once per process."""
    return data()


# ----------------------------------------------------------------------------- one training


def score_of(task: SuiteTask, value: float) -> float:
    """A finite score: a diverged run scores chance-like accuracy 0 or an infinite loss."""
    if not math.isfinite(value):
        return 0.0 if task.higher_is_better else math.inf
    return value


@dataclass(frozen=True)
class Trained:
    """One training's outcome.

    Attributes:
        score: the task's metric after the last epoch (:func:`score_of`).
        optimizer_steps: every step the optimizer took, a range test's included.
        training_steps: the training's own steps (``trainer.global_step``).
    """

    score: float
    optimizer_steps: int
    training_steps: int

    @property
    def sweep_steps(self) -> int:
        """The steps a range test took before the training (0 without one)."""
        return self.optimizer_steps - self.training_steps


def _fit(task: SuiteTask, model: SuiteModule, epochs: int, root: Path | str,
         callbacks: list[L.Callback]) -> tuple[Trained, L.Trainer]:
    t = trainer(epochs, root, callbacks)
    t.fit(model, datamodule=task.datamodule())
    score = score_of(task, float(t.callback_metrics.get(task.metric, math.nan)))
    return Trained(score, model.optimizer_steps, t.global_step), t


def fit_run(task: SuiteTask, seed: int, epochs: int, root: Path | str, *, lr: float | None = None,
            finder: LRRangeTest | None = None) -> Trained:
    """Seed, build and train ``task`` at constant ``lr`` or under ``finder``."""
    if (lr is None) == (finder is None):
        raise ValueError("pass exactly one of lr (a constant LR) and finder (an LRRangeTest)")
    L.seed_everything(seed, verbose=False)
    return _fit(task, task.model(lr), epochs, root, [finder] if finder is not None else [])[0]


def fit(task: SuiteTask, seed: int, epochs: int, root: Path | str, *, lr: float | None = None,
        finder: LRRangeTest | None = None) -> float:
    """Seed, build and train ``task`` at constant ``lr`` or under ``finder``; the last epoch's metric."""
    return fit_run(task, seed, epochs, root, lr=lr, finder=finder).score


class _StopBeforeTraining(L.Callback):
    """Ends ``fit`` before its first training step: only what runs in ``on_fit_start`` (the range test) runs."""

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def sweep(task: SuiteTask, seed: int, root: Path | str, *, epochs: int | None = None, **finder_kwargs):
    """Only the range test, in a Trainer set up for the whole run (``epochs``, default the task's own,
    so a sweep capped to a share of the run sees the run's length), stopped before training;
    ``finder.result``."""
    L.seed_everything(seed, verbose=False)
    finder = LRRangeTest(progress_bar=False, **finder_kwargs)
    trainer(epochs or task.epochs, root, [finder, _StopBeforeTraining()], limit_val_batches=0).fit(
        task.model(), datamodule=task.datamodule())
    return finder.result


def torch_lr_finder_lr(task: SuiteTask, seed: int, num_iter: int = 100) -> float | None:
    """torch-lr-finder's ``range_test(end_lr=10, num_iter=100)`` from 1e-7 and its steepest-gradient
    suggestion, as ``common.torch_lr_finder_lr`` runs it, with the task's own loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    L.seed_everything(seed, verbose=False)
    model = task.model(1e-7)
    finder = LRFinder(model, model.configure_optimizers(), model.criterion, device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(task.datamodule().train_dataloader(), end_lr=10, num_iter=num_iter)
        try:
            ax, lr = finder.plot(suggest_lr=True)
        except (RuntimeError, ValueError):
            return None
    plt.close(ax.figure)
    return None if lr is None or not math.isfinite(lr) else float(lr)


# ----------------------------------------------------------------------------- what users pick instead

#: the one-line alternatives to a range test, by row label
ALTERNATIVES = ("schedule-free", "prodigy")
SCHEDULE_FREE_LR = 0.0025  # AdamWScheduleFree's default
WARMUP_FRACTION = 0.05  # of the run's optimizer steps: Schedule-Free's warm-up
BN_BATCHES = 50  # at most this many training batches recompute BatchNorm statistics


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Does ``optimizer`` keep Schedule-Free's train/eval mode (``optimizer.train()`` / ``.eval()``)?"""
    return callable(getattr(optimizer, "train", None)) and "train_mode" in optimizer.param_groups[0]


def recompute_batch_norm(module: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics by their exact average over ``batches``,
    forwarded in train mode (no gradients; the global RNG is left as it was).

    Returns:
        The number of batches forwarded (0, and nothing done, without BatchNorm layers).
    """
    norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    if not norms:
        return 0
    momenta, was_training = [m.momentum for m in norms], module.training
    count = 0
    with torch.inference_mode(False), torch.no_grad(), torch.random.fork_rng(devices=[]):
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        module.train()
        for x in batches:
            module(x)
            count += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.train(was_training)
    return count


class ScheduleFreeModes(L.Callback):
    """Schedule-Free's train/eval switch, as its README asks: ``optimizer.train()`` before fit and
    before every training step, ``optimizer.eval()`` before validation and at the end of fit.

    Before validating, the BatchNorm statistics are recomputed at the evaluation point (the
    model in train mode, the optimizer in eval mode) over ``batches()``, at most
    ``BN_BATCHES`` of them. Optimizers without the switch are left alone.
    """

    def __init__(self, batches: Callable[[], Iterable[torch.Tensor]]) -> None:
        self.batches = batches

    @staticmethod
    def _switch(trainer: L.Trainer, mode: str) -> None:
        for optimizer in trainer.optimizers:
            if is_schedule_free(optimizer):
                getattr(optimizer, mode)()

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, "train")

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._switch(trainer, "train")

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, "eval")
        if any(is_schedule_free(o) for o in trainer.optimizers):
            recompute_batch_norm(pl_module, itertools.islice(self.batches(), BN_BATCHES))

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._switch(trainer, "eval")


def _quiet(factory: Callable, *args):
    """``factory(*args)`` with its prints to stdout dropped (Prodigy announces its weight decay)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return factory(*args)


def alternative_model(task: SuiteTask, kind: str, epochs: int) -> SuiteModule:
    """``task``'s network, loss and weight decay with a learning-rate-free optimizer instead of its own.

    Args:
        task: the suite task.
        kind: ``"schedule-free"``: ``schedulefree.AdamWScheduleFree`` at its default LR with a
            warm-up of ``WARMUP_FRACTION`` of the run; ``"prodigy"``: ``prodigyopt.Prodigy(lr=1)``
            with torch's ``CosineAnnealingLR`` over the run, stepped every optimizer step.
        epochs: the run's length (the warm-up and the annealing are fitted to it).

    Raises:
        ValueError: ``kind`` is not one of ``ALTERNATIVES``.
    """
    total = epochs * task.steps_per_epoch
    weight_decay = task.options.get("weight_decay", 0.0)
    scheduler = None
    if kind == "schedule-free":
        from schedulefree import AdamWScheduleFree

        factory = partial(AdamWScheduleFree, lr=SCHEDULE_FREE_LR, weight_decay=weight_decay,
                          warmup_steps=max(1, round(WARMUP_FRACTION * total)))
    elif kind == "prodigy":
        from prodigyopt import Prodigy

        factory = partial(_quiet, partial(Prodigy, lr=1.0, weight_decay=weight_decay))
        scheduler = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=total)
    else:
        raise ValueError(f"alternative {kind!r} is not one of {ALTERNATIVES}: pick one of them")
    return SuiteModule(task.net(), Criterion(task.loss, task.label_smoothing), factory, classify=task.loss == "ce",
                       scheduler=scheduler)


def fit_alternative(task: SuiteTask, kind: str, seed: int, epochs: int, root: Path | str, *,
                    finder: LRRangeTest | None = None) -> dict:
    """Seed, build and train ``task`` with the alternative ``kind`` (see :func:`alternative_model`),
    under ``finder`` if given.

    Returns:
        ``score``; ``lr``: the LR of the first param group at the end (for Prodigy its step
        size estimate ``d`` times the LR at its peak, 1); ``schedule``: the class of the LR
        scheduler installed, or None; ``sweep_steps``: the range test's optimizer steps.
    """
    L.seed_everything(seed, verbose=False)
    model = alternative_model(task, kind, epochs)
    x_train = _arrays(task.data).x_train
    modes = ScheduleFreeModes(lambda: x_train.split(task.batch_size))
    # the finder first: it switches the optimizer's modes for its sweep itself, and the validation's
    # BatchNorm statistics are then recomputed by `modes` last, in both rows alike
    run, t = _fit(task, model, epochs, root, ([finder] if finder is not None else []) + [modes])
    group = t.optimizers[0].param_groups[0]
    lr = float(group["d"]) if kind == "prodigy" else float(group["lr"])
    schedules_ = [type(c.scheduler).__name__ for c in t.lr_scheduler_configs]
    return {"score": run.score, "lr": lr, "schedule": schedules_[0] if schedules_ else None,
            "sweep_steps": run.sweep_steps}
