"""Structured configs and one-line config errors for the command line.

Hydra checks every ``finder`` and ``schedule`` node against a schema registered here in
its ``ConfigStore`` (group ``schema``; each ``conf/finder/*.yaml`` and
``conf/schedule/*.yaml`` starts from one), so a misspelt key or a value of the wrong type
is refused while the config is composed, before anything is built or written.
The schemas are generated from the constructors themselves (``LRRangeTest.__init__``
and the fields of each schedule spec), so config keys are constructor arguments and a
default lives in one place only. Range checks stay where they are (``LRRangeTest``,
each spec's ``__post_init__``) and run when :func:`lightning_clr.run.build` instantiates
the nodes, still before any training.

Explicit bounds skip the range test, with one spelling, the finder's own argument::

    python -m lightning_clr.run +schedule=sgdr finder.bounds=[0.01,0.3]

Renamed keys (``finder.min_lr`` and others, see :data:`RENAMED_KEYS`) fail on one line
that names the new key.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from lightning_clr import schedules
from lightning_clr.range_test import LRRangeTest

#: keys that were renamed or removed, and what to write instead
RENAMED_KEYS = {
    "finder.min_lr": "finder.start_lr",
    "finder.max_lr": "finder.end_lr",
    "finder.smoothing": "finder.ema_beta",
    "finder.enabled": "finder.bounds=[BASE_LR,MAX_LR] (which skips the range test)",
    "schedule.base_lr": "finder.bounds=[BASE_LR,MAX_LR]",
    "schedule.max_lr": "finder.bounds=[BASE_LR,MAX_LR]",
}
#: errors raised while Hydra composes the config (unknown key, wrong type, no such option, a config
#: file that is not plain YAML)
COMPOSE_ERRORS: tuple[type[BaseException], ...] = (HydraException, OmegaConfBaseException, yaml.YAMLError)
#: ``ckpt_path`` values that Lightning resolves itself rather than reading a file
CKPT_KEYWORDS = ("last", "best", "hpc")


class ConfigError(ValueError):
    """A config value that cannot work; ``str()`` is one line naming the key, the value and the fix."""


def _schema(name: str, target: str, fields: list[tuple[str, Any, Any]]) -> type:
    """A dataclass with ``_target_`` and one field ``(name, type, default)`` per argument."""
    specs = [("_target_", str, dataclasses.field(default=target))]
    specs += [(key, kind, dataclasses.field(default=default)) for key, kind, default in fields]
    schema = dataclasses.make_dataclass(name, specs)
    schema.__module__ = __name__
    return schema


def spec_schema(spec: type[schedules.Schedule]) -> type:
    """Schema of a schedule node: the spec's fields.

    Args:
        spec: a schedule spec class, e.g. :class:`lightning_clr.schedules.SGDR`.

    Returns:
        A dataclass named ``<Spec>Conf`` for Hydra's ``ConfigStore``.
    """
    hints = typing.get_type_hints(spec)
    fields = [(f.name, hints[f.name], f.default) for f in dataclasses.fields(spec)]
    return _schema(f"{spec.__name__}Conf", f"{spec.__module__}.{spec.__qualname__}", fields)


def finder_schema() -> type:
    """Schema of the ``finder`` node: the arguments of :class:`LRRangeTest` but ``schedule``."""
    hints = typing.get_type_hints(LRRangeTest.__init__)
    params = inspect.signature(LRRangeTest.__init__).parameters.values()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fields = [(p.name, hints[p.name], p.default) for p in params if p.kind in keyword and p.name not in ("self", "schedule")]
    return _schema("LRRangeTestConf", "lightning_clr.LRRangeTest", fields)


def register() -> None:
    """Store the schemas as ``schema/finder/default`` and ``schema/schedule/<name>`` (idempotent)."""
    store = ConfigStore.instance()
    store.store(group="schema/finder", name="default", node=finder_schema())
    for name, spec in schedules.SCHEDULES.items():
        store.store(group="schema/schedule", name=name, node=spec_schema(spec))


def one_line(err: BaseException) -> str:
    """A config error as one line: what Hydra, OmegaConf or a constructor said, without diagnostics.

    Hydra's composition errors carry the offending override in their own message and the
    key in the OmegaConf error they wrap; instantiation errors wrap the constructor's
    ``ValueError``, whose message names the argument, the value and the fix.

    Args:
        err: the exception to report.

    Example::

        error: schedule=cyclic: no such option; choose one of constant, cosine, exp_decay, ...
    """
    if isinstance(err, yaml.YAMLError):
        return yaml_error(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, wanted = err.missing_cfg_file.rpartition("/")
        return f"{group}={wanted}: no such option; choose one of {', '.join(sorted(err.options))}"
    cause = err.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key in RENAMED_KEYS:
        return f"{cause.full_key}: renamed; use {RENAMED_KEYS[cause.full_key]}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent if k not in ("_target_", "hydra")] if parent is not None else []
        line = f"{cause.full_key}: unknown key; check the spelling"
        line += f", known: {', '.join(known)}" if known else ""
        hint = next((s for s in str(err).splitlines() if s.startswith("To append to your config use +")), None)
        if hint and not dataclasses.is_dataclass(cause.object_type):  # a plain node may take unlisted arguments
            line += f"; to pass an argument it does not list, use {hint.rsplit(' ', 1)[-1]}"
        return line
    if isinstance(cause, OmegaConfBaseException):
        return f"{_text(err)}: {_text(cause)}"
    return _text(err)


#: terminal escape sequences (colours, bold: ``\x1b[1m``) and the other control characters
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes and control characters, on one line.

    Messages of torch and other libraries may carry ``\x1b[1m`` (bold) and line breaks; an error
    line printed to a log file or a CI page must not.

    Example::

        >>> plain_text("load failed, \x1b[1mdo this only if you trust it\x1b[0m.\n\tthen")
        'load failed, do this only if you trust it. then'
    """
    return " ".join(_CONTROL.sub(" ", _ESCAPES.sub("", text)).split())


def yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error in a config file as one line: the file, the line and what is wrong there.

    A Python tag (``!!python/object/apply:...``) is named as such: a config holds data, and
    the loader never builds Python objects from a tag (that would run the code it names).
    """
    mark = getattr(err, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    problem = plain_text(str(getattr(err, "problem", None) or err))
    tag = re.search(r"tag:yaml\.org,2002:(python/\S*?)'?$", problem)
    if tag:
        return (f"{where}: the tag !!{tag.group(1)} is refused, a config holds plain YAML data and no Python "
                "objects; write the value as a number, string or list, or as a node with _target_")
    return f"{where}: not valid YAML ({problem}); fix the file's syntax"


def _text(err: BaseException) -> str:
    """The message of ``err`` on one line, without OmegaConf's ``full_key:``/``object_type=`` lines."""
    message = err.msg if isinstance(err, OmegaConfBaseException) and getattr(err, "msg", None) else str(err)
    skip = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")
    lines = [line.strip() for line in str(message).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(skip))


def checkpoint_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path`` (``ckpt_path=...`` or ``+ckpt_path=...`` on the command line), checked to exist.

    Args:
        cfg: the composed config.

    Raises:
        ConfigError: the file does not exist.
    """
    path = cfg.get("ckpt_path")
    if path is None or str(path) in CKPT_KEYWORDS or str(path).startswith("registry"):
        return path
    if not Path(path).is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file; pass a checkpoint of an earlier run, "
            "e.g. +ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt"
        )
    return str(path)
