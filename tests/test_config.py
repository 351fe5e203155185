"""Every file in conf/ composes, and every node instantiates."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightning_clr import LRRangeTest, schedules
from lightning_clr.cli.main import config_dir
from tests.conftest import compose_config

CONF = Path(config_dir())
APPENDED = {"schedule", "callbacks", "sweep"}  # groups not in the defaults list: selected with +group=option
#: sweep options are global (``# @package _global_``): the node each adds, and the plugin it needs
SWEEPS = {"lr_grid": ("grid", None), "optuna_lr": ("search", "hydra_plugins.hydra_optuna_sweeper")}
OPTIONS = sorted(
    (path.parent.name, path.stem) for path in CONF.glob("*/*.yaml")
)
CIFAR_MODELS = {"caffe_cifar10", "resnet56", "resnet110", "wrn28_10"}


def test_conf_is_found_and_complete():
    groups = {g for g, _ in OPTIONS}
    assert {"data", "model", "trainer", "finder", "schedule", "logger"} <= groups
    assert {o for g, o in OPTIONS if g == "schedule"} >= {
        "triangular", "triangular2", "exp_range", "sgdr", "one_cycle", "step", "exp_decay", "cosine"
    }


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    prefix = "+" if group in APPENDED else ""
    if group == "sweep":
        key, plugin = SWEEPS[option]
        if plugin is not None:
            pytest.importorskip(plugin, reason=f"+sweep={option} needs an optional extra")
        cfg = compose_config([f"+sweep={option}"], tmp_path)
        assert OmegaConf.is_dict(cfg.get(key)) and len(cfg[key]) > 0  # composes and adds its node
        return
    cfg = compose_config([f"{prefix}{group}={option}"], tmp_path)
    node = cfg[group]
    if group == "callbacks":
        objs = [instantiate(c) for c in node.values()]
        assert objs
    elif group == "model":  # the node alone: its shapes come by interpolation, nothing is passed in
        model = instantiate(node)
        shape = (2, 3, 32, 32) if option in CIFAR_MODELS else (2, 40)
        if option not in ("wrn28_10",):  # 36.5M parameters: instantiating is check enough
            assert model(torch.randn(shape)).shape == (2, 10)
    elif group == "trainer":
        trainer = instantiate(node, logger=False)
        assert trainer.max_epochs >= 1
    else:
        obj = instantiate(node)
        if group == "schedule":
            assert isinstance(obj, schedules.Schedule)
        if group == "finder":
            assert isinstance(obj, LRRangeTest)


def test_schedule_is_not_a_default():
    cfg = compose_config([])
    assert "schedule" not in cfg
    with pytest.raises(ConfigCompositionException):
        compose_config(["schedule=sgdr"])  # needs the + : there is no default to override


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_embedded_models_take_their_shapes_from_the_data_node(model):
    default = instantiate(compose_config([f"model={model}"]).model)  # MNIST-1D: 40 samples, 10 classes
    assert default(torch.randn(2, 40)).shape == (2, 10) and default.train_acc.num_classes == 10
    cfg = compose_config([f"model={model}", "data=synthetic", "data.input_length=24", "data.num_classes=3"])
    wired = instantiate(cfg.model)
    assert wired(torch.randn(2, 24)).shape == (2, 3) and wired.train_acc.num_classes == 3
    with pytest.raises(RuntimeError):  # really built for 24 samples, not the default 40
        wired(torch.randn(2, 40))


def test_cifar_models_follow_the_data_nodes_classes():
    cfg = compose_config(["model=caffe_cifar10", "data=fake_cifar10", "+data.num_classes=100"])
    assert instantiate(cfg.model)(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_finder_yaml_holds_the_constructors_defaults():
    node = OmegaConf.to_container(compose_config([]).finder)
    defaults = inspect.signature(LRRangeTest.__init__).parameters
    assert node.pop("_target_") == "lightning_clr.LRRangeTest"
    assert node == {k: defaults[k].default for k in node}
