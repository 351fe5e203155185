"""Every file in conf/ composes, and every node instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from lightning_clr import LRRangeTest, schedules
from lightning_clr.config import spec_node
from lightning_clr.run import config_dir
from tests.conftest import compose_config

CONF = Path(config_dir())
APPENDED = {"schedule", "callbacks"}  # groups not in the defaults list: selected with +group=option
OPTIONS = sorted(
    (path.parent.name, path.stem) for path in CONF.glob("*/*.yaml")
)


def test_conf_is_found_and_complete():
    groups = {g for g, _ in OPTIONS}
    assert {"data", "model", "trainer", "finder", "schedule", "logger"} <= groups
    assert {o for g, o in OPTIONS if g == "schedule"} >= {
        "triangular", "triangular2", "exp_range", "sgdr", "one_cycle", "step", "exp_decay", "cosine"
    }


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tmp_path):
    prefix = "+" if group in APPENDED else ""
    cfg = compose_config([f"{prefix}{group}={option}"], tmp_path)
    node = cfg[group]
    if group == "callbacks":
        objs = [instantiate(c) for c in node.values()]
        assert objs
    elif group == "model":
        assert instantiate(node, net={"input_length": 40, "num_classes": 10}) is not None
    elif group == "trainer":
        trainer = instantiate(node, logger=False)
        assert trainer.max_epochs >= 1
    else:
        obj = instantiate(spec_node(node) if group == "schedule" else node)  # minus the CLI-only bounds
        if group == "schedule":
            assert isinstance(obj, schedules.Schedule)
        if group == "finder":
            assert isinstance(obj, LRRangeTest)


def test_schedule_is_not_a_default():
    cfg = compose_config([])
    assert "schedule" not in cfg
    with pytest.raises(ConfigCompositionException):
        compose_config(["schedule=sgdr"])  # needs the + : there is no default to override
