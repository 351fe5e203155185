"""Caffe's CIFAR-10 "full" network, the model of Smith's CLR paper (arXiv 1506.01186, section 4.1).

Layer for layer as ``examples/cifar10/cifar10_full_train_test.prototxt`` in BVLC Caffe:

    conv1 5x5x32 pad 2 -> max pool 3/2 -> ReLU -> LRN    (within channel, 3x3, alpha 5e-5, beta 0.75)
    conv2 5x5x32 pad 2 -> ReLU -> avg pool 3/2 -> LRN    (same)
    conv3 5x5x64 pad 2 -> ReLU -> avg pool 3/2 -> ip1 (linear, 10 outputs)

Caffe's pooling rounds the output size up, which ``ceil_mode=True`` reproduces (32 -> 16 -> 8 -> 4).
Initialization follows the prototxt's Gaussian fillers (std 1e-4 for conv1, 1e-2 elsewhere, zero
biases); the net expects Caffe's input scale (mean-subtracted pixels in 0-255 units), i.e.
``CIFAR10DataModule(std=[1/255] * 3)``. Two solver details live outside the net and are not
reproduced: biases learn at twice the LR, and ip1's weight decay is 250x the global one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WithinChannelLRN(nn.Module):
    """Caffe's ``LRN`` with ``norm_region: WITHIN_CHANNEL``: ``x / (1 + alpha * mean_{k x k}(x^2)) ** beta``.

    The mean runs over a ``size x size`` spatial window of the same channel, zero-padded and
    always divided by ``size**2``, as Caffe's average pooling of the squares does.

    Args:
        size: window side (odd).
        alpha: scale of the mean square.
        beta: exponent.
    """

    def __init__(self, size: int = 3, alpha: float = 5e-5, beta: float = 0.75) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be odd and >= 1, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x / (1.0 + self.alpha * mean_sq).pow(self.beta)


class CaffeCifar10Full(nn.Module):
    """Caffe's ``cifar10_full`` network (three 5x5 convolutions, 89.6k parameters).

    Args:
        num_classes: outputs of ip1.
        input_length: image side (32 for CIFAR); sets the size of ip1's input.
        in_channels: input channels.

    Example::

        net = CaffeCifar10Full()
        logits = net(torch.randn(2, 3, 32, 32) * 64)   # Caffe scale: mean-subtracted 0-255 pixels
    """

    def __init__(self, num_classes: int = 10, input_length: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if input_length < 4:
            raise ValueError(f"input_length (image side) must be >= 4, got {input_length}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
            WithinChannelLRN(),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), WithinChannelLRN(),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, input_length, input_length)).numel()
        self.head = nn.Linear(flat, num_classes)
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        for layer, std in zip([*convs, self.head], (1e-4, 1e-2, 1e-2, 1e-2)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
