"""Residual networks for 32x32 images, in plain torch.

- :class:`CifarResNet`: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016,
  arXiv 1512.03385), section 4.2: a 3x3 convolution with 16 filters, three stages of ``n`` basic
  blocks with 16, 32 and 64 filters (the first block of stages 2 and 3 halves the feature map),
  global average pooling and a linear layer: ``6n + 2`` layers, so ResNet-20/56/110 have
  ``n`` = 3/9/18 and 0.27M/0.85M/1.7M parameters. Shortcuts are identities; where a block
  changes the shape, option A (the paper's CIFAR choice, parameter-free) subsamples by 2 and
  pads the new channels with zeros, option B projects with a 1x1 convolution and batch norm.
- :class:`WideResNet`: Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016, arXiv
  1605.07146): pre-activation blocks (BN-ReLU-conv), widths ``16, 16k, 32k, 64k`` and
  ``(depth - 4) / 6`` blocks per stage, optional dropout between the two convolutions.
  WRN-28-10 has 36.5M parameters.

Both take ``input_length`` (the image side; global pooling makes them size-agnostic) and
``num_classes`` like the 1-D nets; their configs (``conf/model/resnet56.yaml``) set both by interpolation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("A", "B")


def _init(module: nn.Module) -> None:
    """He-normal convolutions (the papers' "msra" filler), unit batch norm, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class _BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.stride, self.pad = stride, out - inp
        self.project = None
        if (stride != 1 or inp != out) and shortcut == "B":
            self.project = nn.Sequential(nn.Conv2d(inp, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.project is not None:
            s = self.project(x)
        else:  # option A: subsample, then zero-pad the new channels (half on each side)
            s = x[:, :, :: self.stride, :: self.stride] if self.stride != 1 else x
            if self.pad:
                s = F.pad(s, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + s)


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 (``depth = 6n + 2``: 20, 32, 44, 56, 110, ...).

    Args:
        depth: layers, ``6n + 2``.
        num_classes: output classes.
        input_length: image side (checked to be at least 8: three stages of stride 1, 2, 2).
        shortcut: ``"A"`` (zero-padding identity, the paper's CIFAR setup) or ``"B"`` (1x1 projection).
        in_channels: input channels.

    Raises:
        ValueError: for a depth that is not ``6n + 2`` or an unknown shortcut.

    Example::

        net = CifarResNet(depth=56)            # 0.85M parameters
        logits = net(torch.randn(2, 3, 32, 32))
    """

    def __init__(self, depth: int = 56, num_classes: int = 10, input_length: int = 32, shortcut: str = "A",
                 in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if input_length < 8:
            raise ValueError(f"input_length (image side) must be >= 8, got {input_length}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, width = [], 16
        for stage, out in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(width, out, 2 if stage > 0 and i == 0 else 1, shortcut))
                width = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class _WideBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1, bias=False)
        self.dropout = dropout
        self.project = nn.Conv2d(inp, out, 1, stride=stride, bias=False) if (stride != 1 or inp != out) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout:
            y = F.dropout(y, self.dropout, self.training)
        y = self.conv2(y)
        return y + (self.project(o) if self.project is not None else x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016), e.g. WRN-28-10.

    Args:
        depth: layers, ``6n + 4`` (16, 22, 28, 40).
        widen_factor: width multiplier ``k``.
        dropout: dropout probability between the two convolutions of a block.
        num_classes: output classes.
        input_length: image side (checked to be at least 8).
        in_channels: input channels.

    Raises:
        ValueError: for a depth that is not ``6n + 4`` or a bad width or dropout.

    Example::

        net = WideResNet(depth=28, widen_factor=10)   # 36.5M parameters
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0, num_classes: int = 10,
                 input_length: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 (16, 22, 28, 40), got {depth}")
        if widen_factor < 1 or not 0 <= dropout < 1:
            raise ValueError(f"widen_factor must be >= 1 and dropout in [0, 1), got {widen_factor}, {dropout}")
        if input_length < 8:
            raise ValueError(f"input_length (image side) must be >= 8, got {input_length}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, width = [], 16
        for stage, out in enumerate(widths):
            for i in range(n):
                blocks.append(_WideBlock(width, out, 2 if stage > 0 and i == 0 else 1, dropout))
                width = out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))
