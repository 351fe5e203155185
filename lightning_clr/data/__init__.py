"""Data modules: the embedded MNIST-1D default, CIFAR-10 and its generated stand-in, a synthetic test set."""

from lightning_clr.data.cifar import CIFAR10DataModule, FakeCIFAR10DataModule
from lightning_clr.data.mnist1d import MNIST1DDataModule
from lightning_clr.data.synthetic import SyntheticDataModule

__all__ = ["CIFAR10DataModule", "FakeCIFAR10DataModule", "MNIST1DDataModule", "SyntheticDataModule"]
