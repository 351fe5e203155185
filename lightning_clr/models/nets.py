"""Small networks for 1-D signals of shape ``(batch, length)``."""

from __future__ import annotations

import torch
from torch import nn


class CNN1D(nn.Module):
    """Three 1-D convolutions and a linear head (the MNIST-1D paper's ConvNet shape).

    Args:
        input_length: samples per signal (40 for MNIST-1D).
        num_classes: output classes.
        channels: feature maps per convolution.
    """

    def __init__(self, input_length: int = 40, num_classes: int = 10, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, input_length)).numel()
        self.head = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


class MLP(nn.Module):
    """A ReLU multilayer perceptron.

    Args:
        input_length: input features.
        num_classes: output classes.
        hidden: width of each hidden layer.
    """

    def __init__(self, input_length: int = 40, num_classes: int = 10, hidden: tuple[int, ...] = (100, 100)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_length
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
