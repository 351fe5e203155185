"""Models: a LightningModule classifier around small 1-D networks and the CIFAR networks of the recipes."""

from lightning_clr.models.caffe_cifar import CaffeCifar10Full
from lightning_clr.models.classifier import Classifier
from lightning_clr.models.nets import CNN1D, MLP
from lightning_clr.models.resnet import CifarResNet, WideResNet

__all__ = ["CNN1D", "MLP", "CaffeCifar10Full", "CifarResNet", "Classifier", "WideResNet"]
