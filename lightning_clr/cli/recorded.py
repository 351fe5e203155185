"""What a run recorded in its YAML files: the Hydra config, its overrides and the hparams it logged.

Every file is read with a safe loader (nothing in it runs). A file that cannot be read as what
it should hold is skipped with one note line naming it and its run; the run is compared
without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_clr.cli.grid_check import bounds_pair

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML was built with it


def read_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.load(f, Loader=_SafeLoader)  # a safe loader: plain data only


def _read_data(path: Path, kind: type) -> tuple[Any, str | None]:
    """A YAML file that should hold a ``kind`` (dict or list): ``(value, None)``, or ``(kind(), why not)``.

    Nothing in the file runs: tags such as ``!!python/object`` are refused by the safe loader.
    """
    try:
        value = read_yaml(path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return kind(), f"not plain YAML data{where} ({err.problem or err.context})"
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        return kind(), f"not readable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    if value is None:
        return kind(), None
    if not isinstance(value, kind):
        return kind(), f"holds a {type(value).__name__} where a {kind.__name__} belongs"
    return value, None


@dataclass
class Recorded:
    """What a run's YAML files hold: the Hydra config and overrides, the hparams it logged, and what was skipped."""

    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_recorded(log_dir: Path, hydra: Path | None, name: str) -> Recorded:
    """Read the run's ``.hydra/config.yaml``, ``.hydra/overrides.yaml`` and ``hparams.yaml``.

    A file that cannot be read as what it should hold is skipped with one note line naming it
    and the run; the run is compared without it.
    """
    found = Recorded()
    files = [("hparams", log_dir / "hparams.yaml", dict)]
    if hydra is not None:
        files += [("config", hydra / "config.yaml", dict), ("overrides", hydra / "overrides.yaml", list)]
    for attr, path, kind in files:
        if not path.is_file():
            continue
        value, problem = _read_data(path, kind)
        if attr == "overrides" and any(not isinstance(o, str) for o in value):
            value, problem = [], "holds an entry that is not an override string"
        if problem is not None:
            found.notes.append(f"note: run '{name}': skipped {path}: {problem}; the run is compared without it "
                               "(fix or delete the file)")
        setattr(found, attr, value)
    return found


def recorded_bounds(recorded: Recorded, path: Path, name: str) -> tuple[float | None, float | None]:
    """``range_test/base_lr`` and ``range_test/max_lr`` of the hparams; a value that is not a number is noted."""
    values: list[float | None] = []
    for key in ("range_test/base_lr", "range_test/max_lr"):
        value = recorded.hparams.get(key)
        try:
            values.append(None if value is None else float(value))
        except (TypeError, ValueError):
            recorded.notes.append(f"note: run '{name}': {key} in {path} is {value!r}, not a number; the run is "
                                  "compared without its bounds (fix or delete the file)")
            return None, None
    return values[0], values[1]


def finder_bounds(config: dict[str, Any]) -> tuple[float, float] | None:
    """``finder.bounds`` of a saved Hydra config; interpolations (``+sweep=optuna_lr``) resolved where they can be."""
    finder = config.get("finder")
    value = finder.get("bounds") if isinstance(finder, dict) else None
    if isinstance(value, str) or (isinstance(value, list) and any(isinstance(v, str) for v in value)):
        try:
            node = OmegaConf.select(OmegaConf.create(config), "finder.bounds")
            value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException:  # e.g. ${hydra:...}, which only resolves inside a Hydra app
            return None
    return bounds_pair(value)


def schedule_shape(recorded: Recorded) -> str:
    """The schedule the run trained, class and shape, as it recorded it; ``""`` when it did not.

    The range test logs the schedule it installed (hparam ``range_test/schedule``, e.g.
    ``Triangular(step_epochs=None, ...)``); a run that skipped the range test recorded only its
    config, whose ``schedule`` node names the schedule when one was selected. Without either,
    nothing says what ran: no default is assumed.
    """
    logged = recorded.hparams.get("range_test/schedule")
    if isinstance(logged, str) and logged:
        return logged
    node = recorded.config.get("schedule")
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        return ""
    shape = ", ".join(f"{k}={v!r}" for k, v in node.items() if not str(k).startswith("_"))
    return f"{node['_target_'].rsplit('.', 1)[-1]}({shape})"
