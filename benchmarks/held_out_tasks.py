"""The tasks of ``held_out.py``: six tasks that no default of the library was chosen on.

``suite.py`` chose every default of ``LRRangeTest()`` on the tasks of ``suite_tasks.TASKS``.
The tasks here are new, and each differs from all of those in its model family, its optimizer
or both: an LSTM, an MLP-Mixer, a 1-D CNN with BatchNorm trained by Adagrad, a deep residual
MLP with LayerNorm, a convolutional autoencoder and a large-batch run. Nothing was chosen on
them: each task's settings (network, optimizer, batch, epochs) were fixed from one quick grid of
constant LRs on seed 0, which sized the training and set the ``grid`` to bracket the best
constant LR (the oracle's grid is widened past it where it does not), with no range test run.

All data are offline, as in the suite: scikit-learn's bundled digits, data sets it generates,
``mnist1d.data.make_dataset`` and the suite's token sequences.
"""

from __future__ import annotations

import contextlib
import io
from functools import partial

import numpy as np
import torch
from suite_tasks import Arrays, SuiteTask, _split, _standardize, digits_images, mlp, mnist1d_signals, pattern_sequences
from torch import nn

# ----------------------------------------------------------------------------- data


def tabular() -> Arrays:
    """Eight classes of a generated tabular set (``make_classification``): 4000 rows, 24 columns, of
    which 12 informative, 6 redundant and 6 noise, three clusters per class, 3% of labels flipped."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=24, n_informative=12, n_redundant=6, n_classes=8,
                               n_clusters_per_class=3, class_sep=1.2, flip_y=0.03, random_state=1)
    return _split(_standardize(x).astype(np.float32), y)


def mnist1d_large() -> Arrays:
    """MNIST-1D from ``make_dataset`` with 10,000 samples (8,000 train, 2,000 validation), seed 0."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 10_000, 0.8, 0
    with contextlib.redirect_stdout(io.StringIO()):
        d = make_dataset(args)
    return Arrays(torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"]),
                  torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"]))


def digits_image_autoencoder() -> Arrays:
    """The 8x8 digits images as both input and target."""
    a = digits_images()
    return Arrays(a.x_train, a.x_train, a.x_val, a.x_val)


# ----------------------------------------------------------------------------- networks


class LSTMClassifier(nn.Module):
    """Embedded tokens, one LSTM layer, a linear head on the last hidden state."""

    def __init__(self, vocab: int = 12, embed: int = 16, hidden: int = 64, classes: int = 3) -> None:
        super().__init__()
        self.embed, self.rnn = nn.Embedding(vocab, embed), nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.out(self.rnn(self.embed(x))[0][:, -1])


class MixerBlock(nn.Module):
    """Token mixing (an MLP across the patches) then channel mixing (an MLP across the features),
    each after a LayerNorm and with a residual connection."""

    def __init__(self, tokens: int, width: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.tokens = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.channels = nn.Sequential(nn.Linear(width, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, width))

    def forward(self, x):  # (batch, tokens, width)
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class Mixer(nn.Module):
    """An MLP-Mixer on 8x8 digits: ``patch`` x ``patch`` patches embedded by a strided convolution,
    ``depth`` mixer blocks, a final LayerNorm, the mean over patches and a linear head."""

    def __init__(self, patch: int = 2, width: int = 32, depth: int = 4, classes: int = 10, image: int = 8) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(1, width, patch, stride=patch)
        self.blocks = nn.Sequential(*(MixerBlock(tokens, width, 2 * tokens, 2 * width) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x):
        h = self.blocks(self.embed(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(h).mean(1))


class CNN1DBN(nn.Module):
    """Three 1-D convolutions with BatchNorm (two of them strided) on 40-point signals, a linear head."""

    def __init__(self, length: int = 40, classes: int = 10) -> None:
        super().__init__()

        def conv(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(1, 16, 5, 1), *conv(16, 32, 5, 2), *conv(32, 32, 3, 2), nn.Flatten())
        self.head = nn.Linear(32 * (length // 4), classes)

    def forward(self, x):
        return self.head(self.body(x.unsqueeze(1)))


class ResMLP(nn.Module):
    """A deep residual MLP: an input layer, ``blocks`` pre-LayerNorm blocks
    (``x + Linear(GELU(Linear(LayerNorm(x))))``), a final LayerNorm and a linear head."""

    def __init__(self, inputs: int, outputs: int, width: int = 64, blocks: int = 8) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                                  nn.Linear(2 * width, width)) for _ in range(blocks))
        self.norm, self.out = nn.LayerNorm(width), nn.Linear(width, outputs)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.norm(h))


class ConvAutoencoder(nn.Module):
    """8x8 images through strided convolutions to a 2x2x8 code (32 numbers) and back up
    through transposed convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                     nn.ReLU(), nn.Conv2d(32, 8, 3, stride=2, padding=1))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(8, 32, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


# ----------------------------------------------------------------------------- tasks

HELD_OUT_TASKS: dict[str, SuiteTask] = {t.name: t for t in [
    SuiteTask("lstm-patterns", "LSTM classifier", pattern_sequences, LSTMClassifier, torch.optim.RMSprop,
              batch_size=32, epochs=10, metric="val/acc", grid=(1e-4, 0.1),
              note="last hidden state; the label counts a token in both halves"),
    SuiteTask("mixer-digits", "MLP-Mixer", digits_images, Mixer, torch.optim.AdamW, {"weight_decay": 0.05},
              batch_size=32, epochs=8, metric="val/acc", grid=(1e-4, 0.01),
              note="2x2 patches, 4 blocks of token- and channel-mixing MLPs with LayerNorm"),
    SuiteTask("bn1d-mnist1d", "1-D CNN + BatchNorm", mnist1d_signals, CNN1DBN, torch.optim.Adagrad,
              batch_size=32, epochs=6, metric="val/acc", grid=(0.01, 1.0),
              note="Adagrad: the step shrinks as squared gradients accumulate"),
    SuiteTask("resmlp-tabular", "deep residual MLP + LayerNorm", tabular, partial(ResMLP, 24, 8), torch.optim.SGD,
              {"momentum": 0.9, "nesterov": True}, batch_size=64, epochs=6, metric="val/acc", grid=(1e-3, 1.0),
              note="8 pre-LayerNorm blocks; generated 8-class tabular data"),
    SuiteTask("convae-digits", "convolutional autoencoder", digits_image_autoencoder, ConvAutoencoder,
              torch.optim.Adam, batch_size=32, epochs=8, loss="mse", grid=(1e-3, 0.1),
              note="code of 32 numbers (2x2x8)"),
    SuiteTask("bigbatch-mnist1d", "large batch", mnist1d_large, partial(mlp, 40, (256, 256), 10), torch.optim.SGD,
              {"momentum": 0.9}, batch_size=512, epochs=20, metric="val/acc", grid=(0.1, 10.0),
              note="batch 512, 15 steps per epoch; 10,000 MNIST-1D samples"),
]}
