"""Models: a LightningModule classifier around small 1-D networks and the CIFAR networks of the recipes."""

from lightning_clr.models.caffe_cifar import CaffeCifar10Full
from lightning_clr.models.classifier import Classifier
from lightning_clr.models.nets import MLP, CNN1D
from lightning_clr.models.resnet import CifarResNet, WideResNet

__all__ = ["CaffeCifar10Full", "CifarResNet", "Classifier", "CNN1D", "MLP", "WideResNet"]
