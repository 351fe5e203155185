"""Find the runs under some folders and read each back: its scalars, its recorded config, its label.

A run is a folder holding TensorBoard event files (:mod:`lightning_clr.cli.events` reads them);
the Hydra run folder above it, when there is one, holds what the run was configured with
(:mod:`lightning_clr.cli.recorded` reads it). Runs are labelled by the overrides that differ
between them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_clr.cli.events import EVENT_GLOB, damage_note, read_events
from lightning_clr.cli.recorded import finder_bounds, read_recorded, recorded_bounds, schedule_shape

#: the range test's scalars (one point per sweep step)
CURVE_TAGS = ("range_test/lr", "range_test/loss", "range_test/loss_raw")
#: overrides that never tell two runs apart in a label
_HIDDEN = ("hydra.", "+recipe=", "recipe=", "+sweep=", "sweep=")


@dataclass
class Run:
    """What one run logged, as read back from its TensorBoard files.

    Attributes:
        log_dir: the folder holding the event files.
        label: the run's Hydra overrides (or its folder name).
        schedule: the class name of the schedule the run trained, as it recorded it, or ``"?"``
            when it recorded none.
        base_lr: hparam ``range_test/base_lr`` (``None`` if not logged).
        max_lr: hparam ``range_test/max_lr``.
        val_acc: ``(epoch, val/acc)`` per validation, epochs counted from 1.
        ensemble_acc: ``(epoch, ensemble/val_acc)`` per validation that logged one.
        lr: ``(step, lr)`` of the first param group, every logged step.
        overrides: the run's Hydra overrides, without ``hydra.*`` and recipe/sweep selections.
        explicit: ``finder.bounds`` from the run's config (None when the range test chose them).
        last: the last logged value of every scalar tag.
        scalars: ``(epoch, value)`` per validation of every epoch-level tag, read on demand.
        curve: the range test's ``range_test/*`` values, one per sweep step.
        name: the run folder's name (a multirun's job number), or the log folder's.
        notes: what the event files lost (an event file cut in the middle of a record), one line each.
        unfinished: whether an event file was cut short or holds a corrupt record, so the last
            values read are not the run's last (the table says so next to the final value).
        shape: the schedule with its shape parameters, e.g. ``SGDR(cycle_epochs=1, ...)``, as
            recorded (``""`` when it was not).
    """

    log_dir: Path
    label: str
    schedule: str
    base_lr: float | None
    max_lr: float | None
    val_acc: list[tuple[int, float]]
    ensemble_acc: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    explicit: tuple[float, float] | None = None
    last: dict[str, float] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict)
    name: str = ""
    notes: list[str] = field(default_factory=list)
    unfinished: bool = False
    shape: str = ""


def find_log_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every folder under ``paths`` that holds a TensorBoard event file, sorted.

    Raises:
        FileNotFoundError: for a path that does not exist or holds no event file.
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"run folder '{path}' does not exist")
        dirs = _event_dirs(path) if path.is_dir() else set()
        if not dirs:
            raise FileNotFoundError(
                f"no TensorBoard event file ({EVENT_GLOB}) under '{path}'; pass the folder of a run trained "
                "with the tensorboard logger (the default)"
            )
        found |= dirs
    return sorted(found, key=_natural_key)


def _event_dirs(root: Path) -> set[Path]:
    """Folders under ``root`` holding an event file, following symlinked folders (each real folder once).

    ``Path.rglob`` does not follow a symlinked job folder, so a sweep whose runs were linked
    in would lose them from the table without a word.
    """
    found: set[Path] = set()
    seen: set[str] = set()
    for folder, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link loop, or a folder linked twice
            subdirs[:] = []
            continue
        seen.add(real)
        if any(fnmatch.fnmatch(name, EVENT_GLOB) for name in files):
            found.add(Path(folder))
    return found


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in path.parts]


def _hydra_dir(log_dir: Path) -> Path | None:
    for folder in (log_dir, *log_dir.parents):
        if (folder / ".hydra" / "config.yaml").is_file():
            return folder / ".hydra"
    return None


def _keep_tag(metrics: Sequence[str]) -> Callable[[str], bool]:
    """Which tags :func:`load_run` keeps every value of: those the table, the figure and the checks show."""
    shown = {"epoch", "val/acc", "ensemble/val_acc", "lr", *CURVE_TAGS, *metrics}
    return lambda tag: tag in shown or tag.startswith("lr/")


def load_run(log_dir: str | Path, metrics: Sequence[str] = ()) -> Run:
    """Read one run's scalars, hparams and Hydra config.

    Each event file is read once, and only the values of the tags shown are kept (of every
    other tag, its last value).

    Args:
        log_dir: a folder with the run's TensorBoard event files.
        metrics: further epoch-level tags to keep per epoch in ``Run.scalars`` (``val/acc`` always is).

    Raises:
        ValueError: when the folder's event files hold bytes but no readable record.
    """
    log_dir = Path(log_dir)
    files = read_events(log_dir, _keep_tag(metrics))
    series: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, float] = {}
    for f in files:
        for tag, points in f.series.items():
            series.setdefault(tag, []).extend(points)
        last.update(f.last)
    # Lightning logs the 0-based epoch next to every metric, at the same step
    epoch_at = {step: int(value) for step, value in series.get("epoch", [])}

    def per_epoch(tag: str) -> list[tuple[int, float]]:
        return [(epoch_at.get(step, i) + 1, value) for i, (step, value) in enumerate(series.get(tag, []))]

    lr_tag = "lr" if "lr" in series else next((t for t in sorted(series) if t.startswith("lr/")), None)
    hydra = _hydra_dir(log_dir)
    name = hydra.parent.name if hydra is not None else log_dir.name
    recorded = read_recorded(log_dir, hydra, name)
    label, explicit, shown = log_dir.name, None, []
    shape = schedule_shape(recorded)
    if hydra is not None:
        config = recorded.config
        shown = [o for o in recorded.overrides if not o.startswith(_HIDDEN)]
        label = " ".join(shown) or hydra.parent.name
        # a run without a sweep logs no bounds; interpolated bounds (+sweep=optuna_lr) resolve here
        explicit = finder_bounds(config)
    base, top = recorded_bounds(recorded, log_dir / "hparams.yaml", name)
    if base is None and explicit:
        base, top = explicit
    val_acc = per_epoch("val/acc")
    stops = f"the run's val/acc stops at epoch {val_acc[-1][0]}" if val_acc else "it holds no val/acc"
    notes = recorded.notes + [damage_note(f, stops) for f in files if f.problem]
    return Run(log_dir, label, shape.split("(", 1)[0] or "?", base, top, val_acc, per_epoch("ensemble/val_acc"),
               series.get(lr_tag, []) if lr_tag else [], overrides=shown, explicit=explicit, last=last,
               scalars={t: per_epoch(t) for t in {"val/acc", *metrics}},
               curve={t: [value for _, value in series[t]] for t in CURVE_TAGS if t in series},
               name=name, notes=notes,
               unfinished=any(f.problem for f in files), shape=shape)


def distinct_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's label from only the overrides whose value differs between the runs.

    An override that every run has with the same value is dropped. A run left with nothing
    keeps its own label when it is the only run, else its folder's name (a job number).
    One pass over the runs' overrides: linear in their number.
    """
    key = lambda override: override.split("=", 1)[0]
    values: dict[str, set[str]] = {}
    holders: dict[str, int] = {}
    for run in runs:
        for k, override in {key(o): o for o in run.overrides}.items():
            values.setdefault(k, set()).add(override)
            holders[k] = holders.get(k, 0) + 1
    differ = {k for k, v in values.items() if len(v) > 1 or holders[k] < len(runs)}
    labels = []
    for run in runs:
        kept = [_short(o) for o in run.overrides if key(o) in differ]
        labels.append(" ".join(kept) if kept else run.label if len(runs) == 1 else run.name or run.label)
    return labels


def _short(override: str) -> str:
    """``key=value`` with a long float (an Optuna draw) written to 4 significant digits."""
    name, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{name}={number:.4g}" if len(value) > 8 and "." in value else override
