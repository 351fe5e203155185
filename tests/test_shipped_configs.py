"""Every shipped config composes, and every key its comments offer is accepted as an override.

A comment offers a key in one of three forms:

1. an override as typed on a command line, ``[+]KEY=VALUE``, whose KEY starts with a config
   group (``+schedule=sgdr``, ``trainer=ddp``, ``hydra/launcher=slurm``, ``schedule.cycle_mult=1.5``)
   or a top-level key of the composed config (``ckpt_path=PATH``); prose such as ``T0=10`` or
   ``-gpu=all`` is none. ALL-CAPS words and ``<...>`` stand for any value (``+schedule=NAME``);
   a comma list without brackets is a multirun, one value each;
2. a commented-out key of the file's own node, a comment that is just ``key: value``;
3. keys of the file's own node listed after "optional", as in ``+ optional base_lr, max_lr``.

Each offer is composed on top of the overrides that select the file (``+schedule=sgdr`` for
conf/schedule/sgdr.yaml, ``+recipe=NAME`` for a recipe) and the group choices before it on the
same line, as a user would type them. A key of forms 2 and 3 is set to its current value, so only
its existence is tested.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from lightning_clr.cli.main import config_dir
from tests.conftest import compose_config

CONF = Path(config_dir())
RECIPES = Path(importlib.import_module("lightning_clr.recipes").__path__[0]) / "recipe"
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("__")} | {"recipe"}
APPENDED = {"schedule", "callbacks", "sweep", "recipe"}  # groups not in the defaults list: selected with +group=option
PLUGINS = {"sweep/optuna_lr": "hydra_plugins.hydra_optuna_sweeper", "hydra/launcher/slurm": "hydra_plugins.hydra_submitit_launcher"}

_COMMENT = re.compile(r"(?:^|\s)#(.*)$")
_OVERRIDE = re.compile(r"""(?<![\w\-+./=])(\+{0,2}[A-Za-z_]\w*(?:[./][A-Za-z_]\w*)*)=('[^']*'|"[^"]*"|\S+)""")
_COMMENTED_KEY = re.compile(r"""^\s?([a-z_]\w*): (null|true|false|-?[\d.e+-]+|\[[^\]]*\]|'[^']*'|"[^"]*"|[\w./-]+)\s*$""")
_SNAKE = r"[a-z][a-z0-9]*_[a-z0-9_]+"
_OPTIONAL = re.compile(rf"\boptional\s+({_SNAKE}(?:\s*,\s*{_SNAKE})*)")
_PLACEHOLDER = re.compile(r"<[^>]*>?|\b[A-Z][A-Z_]+\b")
CURRENT = "{current}"  # the value of a node key offered without one, filled in when the test runs


def _shipped() -> list[tuple[str, Path, list[str]]]:
    """``(id, path, the overrides that select it)`` for conf/config.yaml, every option of every group, every recipe."""
    files = [("config", CONF / "config.yaml", [])]
    for path in sorted(CONF.glob("*/**/*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        plus = "+" if group.split("/")[0] in APPENDED else ""
        files.append((f"{group}/{path.stem}", path, [f"{plus}{group}={path.stem}"]))
    files += [(f"recipe/{p.stem}", p, [f"+recipe={p.stem}"]) for p in sorted(RECIPES.glob("*.yaml"))]
    return files


SHIPPED = _shipped()


def _node(file_id: str, text: str) -> str:
    """Dotted path of the node a file fills: '' for the root (config.yaml, ``@package _global_``)."""
    if file_id == "config" or "@package _global_" in text.splitlines()[0]:
        return ""
    return file_id.rpartition("/")[0].replace("/", ".")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+")


def _merge(overrides: list[str], new: str) -> list[str]:
    """``overrides`` with ``new`` in place of any override of the same key."""
    return [o for o in overrides if _key(o) != _key(new)] + [new]


def _values(value: str, is_group: bool) -> list[str]:
    """The value(s) Hydra gets: the shell's quotes removed, trailing punctuation dropped, a multirun
    split, placeholders filled."""
    if value[0] in "'\"":
        value = shlex.split(value)[0]
        plain = False
    else:
        value = value.rstrip(".,;:`)")
        plain = value[0] not in "[{"
    values = value.split(",") if plain and "," in value else [value]
    return [_PLACEHOLDER.sub("{group}" if is_group else "1", v) for v in values]


def override_offers(comment: str, roots: set[str]) -> list[tuple[list[str], str]]:
    """Form 1: ``(group choices before it on the line, override)`` for every override token of ``comment``."""
    found: list[tuple[list[str], str]] = []
    choices: list[str] = []
    for match in _OVERRIDE.finditer(comment):
        key, value = match.group(1), match.group(2)
        root = re.split(r"[./]", key.lstrip("+"))[0]
        if root not in roots:
            continue
        is_group = "." not in key and root in GROUPS
        for v in _values(value, is_group):
            found.append((list(choices), f"{key}={v}"))
        if is_group:
            choices = _merge(choices, f"{key}={_values(value, True)[0]}")
    return found


def node_offers(comment: str) -> list[tuple[str, str | None]]:
    """Forms 2 and 3: ``(key, value or None)`` offered for the file's own node."""
    if match := _COMMENTED_KEY.match(comment):
        return [(match.group(1), match.group(2))]
    return [(key.strip(), None) for match in _OPTIONAL.finditer(comment) for key in match.group(1).split(",")]


def _literal(value: Any) -> str:
    """A composed value written back as an override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _context(selection: list[str], overrides: list[str]) -> list[str]:
    """The overrides to compose: the file's selection, then ``overrides`` (placeholders filled), each key once.

    A recipe is a whole setup of its own: an offer of one is composed without the file's selection.
    """
    composed = [] if any(_key(o) == "recipe" for o in overrides) else list(selection)
    for override in overrides:
        composed = _merge(composed, _fill_group(override))
    return composed


def _options(group: str) -> list[str]:
    folder = RECIPES if group == "recipe" else CONF / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _fill_group(override: str) -> str:
    """Put a real option where a placeholder stood for one (``+schedule=NAME``)."""
    key = _key(override)
    return override.replace("{group}", _options(key)[0]) if "{group}" in override else override


def _roots(file_id: str, text: str) -> set[str]:
    """What an override's key may start with: a group, a top-level key of config.yaml or of a global file."""
    top = set(yaml.safe_load((CONF / "config.yaml").read_text()))
    if not _node(file_id, text):
        top |= set(yaml.safe_load(text) or {})
    return GROUPS | top


def _offers() -> list[Any]:
    params = []
    for file_id, path, selection in SHIPPED:
        text = path.read_text()
        node, roots, seen = _node(file_id, text), _roots(file_id, text), set()
        for line in text.splitlines():
            comment = _COMMENT.search(line)
            if comment is None or "@package" in comment.group(1):
                continue
            offers = [(_context(selection, [*before, o]), o) for before, o in override_offers(comment.group(1), roots)]
            for key, value in node_offers(comment.group(1)):
                shown = f"{node}.{key}" if node else key
                offers.append((selection + [f"{shown}={CURRENT if value is None else value}"], shown))
            for overrides, shown in offers:
                if shown in seen:
                    continue
                seen.add(shown)
                params.append(pytest.param(file_id, overrides, id=f"{file_id}: {shown}".replace("{group}", "<option>")))
    return params


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _needs_plugin(file_id: str) -> None:
    if file_id in PLUGINS:
        pytest.importorskip(PLUGINS[file_id], reason=f"{file_id} needs an optional extra")


@pytest.mark.parametrize("file_id, path, selection", SHIPPED, ids=[f for f, _, _ in SHIPPED])
def test_every_shipped_config_composes(file_id, path, selection):
    _needs_plugin(file_id)
    cfg = compose_config(selection)
    node = _node(file_id, path.read_text())
    if node and not node.startswith("hydra"):
        assert OmegaConf.select(cfg, node) is not None, f"{file_id} adds no {node} node"
    assert {"data", "model", "trainer", "finder"} <= set(cfg)


@pytest.mark.parametrize("file_id, overrides", _offers())
def test_every_key_a_comment_offers_is_accepted(file_id, overrides):
    _needs_plugin(file_id)
    *selection, last = overrides
    if last.endswith(f"={CURRENT}"):  # a key of the node: set it to what it is, so only its existence counts
        key = last.split("=", 1)[0]
        value = OmegaConf.select(compose_config(selection), key, default=None)
        last = f"{key}={_literal(OmegaConf.to_object(value) if OmegaConf.is_config(value) else value)}"
    compose_config([*selection, last])


class TestOfferPatterns:
    """The patterns find the offers a reader would copy, and nothing in prose."""

    ROOTS = GROUPS | {"ckpt_path", "grid"}

    def test_overrides_on_a_command_line(self):
        line = " python -m lightning_clr.run trainer=ddp trainer.devices=4 +schedule=sgdr schedule.cycle_mult=1.5"
        assert override_offers(line, self.ROOTS) == [
            ([], "trainer=ddp"), (["trainer=ddp"], "trainer.devices=4"), (["trainer=ddp"], "+schedule=sgdr"),
            (["trainer=ddp", "+schedule=sgdr"], "schedule.cycle_mult=1.5"),
        ]

    def test_prose_is_no_offer(self):
        line = " WRN-28-20 with T0=10, T_mult=2 on all GPUs (-gpu=all), e.g. inputs=x target=y, n=18"
        assert override_offers(line, self.ROOTS) == []

    def test_punctuation_placeholders_and_multiruns(self):
        line = (" (finder.bounds=null), +ckpt_path=<run dir>/last.ckpt, +callbacks=[snapshot,flatness]."
                " +schedule=NAME; -m +schedule=constant,sgdr hydra.launcher.setup='[\". .venv/bin/activate\"]'.")
        assert [o for _, o in override_offers(line, self.ROOTS)] == [
            "finder.bounds=null", "+ckpt_path=1", "+callbacks=[snapshot,flatness]", "+schedule={group}",
            "+schedule=constant", "+schedule=sgdr", 'hydra.launcher.setup=[". .venv/bin/activate"]',  # as the shell passes it
        ]

    def test_keys_of_the_node(self):
        assert node_offers(" typed keys (lightning_clr.cli.config); + optional base_lr, max_lr") == [
            ("base_lr", None), ("max_lr", None)]
        assert node_offers(" restart_warmup: 0.1") == [("restart_warmup", "0.1")]
        assert node_offers(" note: see the README") == []
        assert node_offers(" the optional extra needs pip install") == []

    def test_a_refused_key_fails_to_compose(self):
        with pytest.raises(Exception, match="base_lr"):
            compose_config(["+schedule=sgdr", "schedule.base_lr=0.001"])
