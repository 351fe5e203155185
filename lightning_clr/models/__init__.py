"""Models: a LightningModule classifier around small 1-D networks."""

from lightning_clr.models.classifier import Classifier
from lightning_clr.models.nets import MLP, CNN1D

__all__ = ["Classifier", "CNN1D", "MLP"]
