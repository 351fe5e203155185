"""Compare training runs side by side from their TensorBoard files.

Usage::

    python -m lightning_clr.cli.compare RUN_DIR [RUN_DIR ...] [--target 0.9] [--png compare.png]

Each ``RUN_DIR`` is searched for TensorBoard event files, so a Hydra run folder, a multirun
folder (one run per job) or a ``version_N`` log folder all work. For every run the table shows
the schedule it trained, as the run recorded it (hparam ``range_test/schedule``, class and shape,
logged by the range test; else the ``schedule`` node of its ``.hydra/config.yaml``; ``?`` when
it recorded neither: no default is assumed), the LR bounds (hparams ``range_test/base_lr``,
``range_test/max_lr``, or the config's ``finder.bounds`` when the range test was skipped), the
best and final ``val/acc``, the epochs until ``val/acc`` first reached ``target``, and the best
``ensemble/val_acc`` when a :class:`~lightning_clr.SnapshotEnsemble` logged one. A PNG puts the
val-accuracy curves and the LR schedules of all runs side by side.

Each event file is opened once and read in one pass (its records' checksums verified together);
only the values of the tags shown are kept, so the time grows linearly with the number of
files (``benchmarks/compare_scaling.py`` measures it). An event file cut mid-record marks its
run ``(unfinished)``; a YAML file that cannot be read as what it should hold is skipped with
one line naming it and its run, and the run is compared without it.

Runs are labelled by the overrides that differ between them (the ones all runs share say
nothing). When the runs hold a grid of constant LRs (``finder.bounds=[lr,lr]``, as
``+sweep=lr_grid`` trains) and a range test, the output adds the grid check: where the range
test's bounds fall on the grid's curve of final metric against LR (:mod:`lightning_clr.cli.grid_check`
draws its figure); after ``+sweep=optuna_lr`` it adds the best trial against one range test.

In a Hydra multirun, :class:`CompareRuns` (a Hydra callback) prints the same when the
sweep ends: ``hydra.callbacks.compare._target_=lightning_clr.cli.compare.CompareRuns``.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import math
import os
import struct
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_clr.cli.grid_check import GridCheck, SearchCheck, bounds_pair, plot_grid_check, plot_search_check

EVENT_GLOB = "events.out.tfevents.*"
#: the range test's scalars (one point per sweep step)
CURVE_TAGS = ("range_test/lr", "range_test/loss", "range_test/loss_raw")
#: overrides that never tell two runs apart in a label
_HIDDEN = ("hydra.", "+recipe=", "recipe=", "+sweep=", "sweep=")
#: what the Optuna sweeper writes into the sweep folder
OPTUNA_RESULTS = "optimization_results.yaml"


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


#: bytes before a TFRecord's payload (its length, 8, and the length's CRC, 4) and after it (the payload's CRC)
_HEADER, _FOOTER = 12, 4
#: payloads up to this size (every scalar record) are checked against their CRC; longer ones (images) are not read
_CHECKED_PAYLOAD = 1024
#: CRC-32C (Castagnoli) of every byte value, the checksum of TFRecord framing
_CRC_TABLE: Any = None


def _crc_table() -> Any:
    global _CRC_TABLE
    if _CRC_TABLE is None:
        import numpy as np

        table = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            table.append(crc)
        _CRC_TABLE = np.array(table, dtype=np.uint32)
    return _CRC_TABLE


def masked_crc32c(chunks: Sequence[bytes]) -> list[int]:
    """The masked CRC-32C that TFRecord stores after a record's length and after its payload, for many strings.

    The strings advance together, one byte position per vectorized step, so the cost grows
    with the longest string, not with a Python loop over every byte.

    Example::

        >>> masked_crc32c([b"", b"abc"])
        [2726488792, 569464686]
    """
    return _masked_crc32c(chunks).tolist()


def _masked_crc32c(chunks: Sequence[bytes]) -> Any:
    """:func:`masked_crc32c` as a ``uint32`` array."""
    import numpy as np

    n, table = len(chunks), _crc_table()
    if not n:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")  # longest first: byte j updates a prefix of the rows
    lengths = lengths[order]
    width = int(lengths[0])
    grid = np.zeros((n, width), dtype=np.uint8)
    flat = np.frombuffer(b"".join(chunks[i] for i in order), dtype=np.uint8)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    grid[np.repeat(np.arange(n), lengths), np.arange(flat.size) - firsts] = flat
    rows = np.searchsorted(-lengths, -np.arange(width), side="left")  # strings longer than j
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    for j in range(width):
        head = crc[: rows[j]]
        crc[: rows[j]] = table[(head ^ grid[: rows[j], j]) & 0xFF] ^ (head >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)  # wraps modulo 2**32
    out = np.empty(n, dtype=np.uint32)
    out[order] = masked
    return out


def _parse_event(payload: bytes) -> Any:
    """One ``Event`` protobuf (a module-level name, so a test can count the records read)."""
    return _event_class().FromString(payload)


@functools.cache
def _event_class() -> Any:
    from tensorboard.compat.proto.event_pb2 import Event

    return Event


@dataclass
class EventFile:
    """The scalars of one event file, read in one pass.

    Attributes:
        path: the file.
        series: ``(step, value)`` of every kept tag, in the order written.
        last: the last value of every scalar tag.
        records: whole, intact records read.
        problem: where reading stopped early (``"truncated"``: the file ends inside a record;
            ``"corrupt"``: a record failed its checksum or did not parse), else None.
        size: the file's size in bytes.
    """

    path: Path
    series: dict[str, list[tuple[int, float]]]
    last: dict[str, float]
    records: int
    problem: str | None
    size: int


def _frames(data: bytes) -> tuple[list[int], list[int], bool]:
    """Offsets and payload lengths of the whole records in ``data``, and whether it ends inside a record."""
    offsets, lengths, offset, size = [], [], 0, len(data)
    while offset + _HEADER <= size:
        (length,) = struct.unpack_from("<Q", data, offset)
        if offset + _HEADER + length + _FOOTER > size:
            break
        offsets.append(offset)
        lengths.append(length)
        offset += _HEADER + length + _FOOTER
    return offsets, lengths, offset < size


def _scalars(data: bytes, offsets: Sequence[int], lengths: Sequence[int], keep: Callable[[str], bool]) -> tuple[
        dict[str, list[tuple[int, float]]], dict[str, float], int]:
    """Parse the records at ``offsets``: ``(series, last, parsed)``.

    ``parsed`` counts the records before the first that does not parse (all of them when each does).
    """
    from google.protobuf.message import DecodeError

    series: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, float] = {}
    wanted: dict[str, bool] = {}
    parse = _parse_event
    for i, offset in enumerate(offsets):
        start = offset + _HEADER
        try:
            event = parse(data[start: start + lengths[i]])
        except DecodeError:
            return series, last, i
        step = event.step
        for value in event.summary.value:
            if not value.HasField("simple_value"):
                continue
            tag, number = value.tag, value.simple_value
            last[tag] = number
            shown = wanted.get(tag)
            if shown is None:
                shown = wanted[tag] = keep(tag)
            if shown:
                series.setdefault(tag, []).append((step, number))
    return series, last, len(offsets)


def _first_failed_check(data: bytes, offsets: Sequence[int], lengths: Sequence[int]) -> int:
    """Index of the first record whose length, or whose payload up to ``_CHECKED_PAYLOAD`` bytes, fails its CRC.

    ``len(offsets)`` when none does. All checksums are computed in one vectorized pass.
    """
    import numpy as np

    small = [i for i, length in enumerate(lengths) if length <= _CHECKED_PAYLOAD]
    firsts = [*offsets, *(offsets[i] + _HEADER for i in small)]
    ends = [*(o + 8 for o in offsets), *(offsets[i] + _HEADER + lengths[i] for i in small)]
    stored = np.frombuffer(b"".join([data[end: end + 4] for end in ends]), dtype="<u4")
    owners = np.array([*range(len(offsets)), *small], dtype=np.int64)
    failed = owners[_masked_crc32c([data[a:b] for a, b in zip(firsts, ends)]) != stored]
    return int(failed.min(initial=len(offsets)))


def read_event_file(path: str | Path, keep: Callable[[str], bool]) -> EventFile:
    """The scalars of a TensorBoard event file, as TensorBoard's reader sees them, in one pass over its bytes.

    Every record's length is checked against its CRC, and so is every payload of up to
    ``_CHECKED_PAYLOAD`` bytes (each scalar record; images are neither checked nor read).
    Reading stops at the first record that is cut short or fails a check, as TensorBoard's
    reader does, and ``problem`` says which.

    Args:
        path: the event file.
        keep: whether every value of a tag is kept in ``series`` (of the others, the last value is).
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    offsets, lengths, cut_short = _frames(data)
    series, last, parsed = _scalars(data, offsets, lengths, keep)
    good = min(_first_failed_check(data, offsets[:parsed], lengths[:parsed]), parsed)
    if good < parsed:  # a record failed its checksum: keep only what came before it
        series, last, _ = _scalars(data, offsets[:good], lengths[:good], keep)
    problem = "corrupt" if good < len(offsets) else "truncated" if cut_short else None
    return EventFile(path, series, last, good, problem, len(data))


def _read_events(log_dir: Path, keep: Callable[[str], bool]) -> list[EventFile]:
    """Every event file of ``log_dir``, oldest first (the order TensorBoard reads them in).

    Raises:
        ValueError: when no event file of ``log_dir`` holds a readable record, though one holds bytes.
    """
    files = [read_event_file(f, keep) for f in sorted(log_dir.glob(EVENT_GLOB))]
    if files and not any(f.records for f in files):
        garbage = next((f for f in files if f.size), None)
        if garbage is not None:
            raise ValueError(
                f"'{garbage.path}': not a TensorBoard event file (no readable record in its {garbage.size} "
                "bytes); remove it, or pass the folder of a run trained with the tensorboard logger"
            )
    return files


def _damage_note(f: EventFile, stops: str) -> str:
    """One line saying what an event file lost."""
    if f.problem == "truncated":
        what = f"ends in a truncated record (the writer stopped mid-record, after {f.records} whole records)"
    else:
        what = f"holds a corrupt record after {f.records} whole records (a failed checksum); reading stopped there"
    return f"note: {f.path} {what}; {stops}, and anything logged later is lost"


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


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML was built with it


def _read_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.load(f, Loader=_SafeLoader)  # a safe loader: plain data only


def _read_data(path: Path, kind: type) -> tuple[Any, str | None]:
    """A YAML file that should hold a ``kind`` (dict or list): ``(value, None)``, or ``(kind(), why not)``.

    Nothing in the file runs: tags such as ``!!python/object`` are refused by the safe loader.
    """
    try:
        value = _read_yaml(path)
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
class _Recorded:
    """What a run's YAML files hold: the Hydra config and overrides, the hparams it logged, and what was skipped."""

    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _recorded(log_dir: Path, hydra: Path | None, name: str) -> _Recorded:
    """Read the run's ``.hydra/config.yaml``, ``.hydra/overrides.yaml`` and ``hparams.yaml``.

    A file that cannot be read as what it should hold is skipped with one note line naming it
    and the run; the run is compared without it.
    """
    found = _Recorded()
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


def _bounds(recorded: _Recorded, path: Path, name: str) -> tuple[float | None, float | None]:
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


def _finder_bounds(config: dict[str, Any]) -> tuple[float, float] | None:
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


def _schedule_shape(recorded: _Recorded) -> str:
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
    files = _read_events(log_dir, _keep_tag(metrics))
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
    recorded = _recorded(log_dir, hydra, name)
    label, explicit, shown = log_dir.name, None, []
    shape = _schedule_shape(recorded)
    if hydra is not None:
        config = recorded.config
        shown = [o for o in recorded.overrides if not o.startswith(_HIDDEN)]
        label = " ".join(shown) or hydra.parent.name
        # a run without a sweep logs no bounds; interpolated bounds (+sweep=optuna_lr) resolve here
        explicit = _finder_bounds(config)
    base, top = _bounds(recorded, log_dir / "hparams.yaml", name)
    if base is None and explicit:
        base, top = explicit
    val_acc = per_epoch("val/acc")
    stops = f"the run's val/acc stops at epoch {val_acc[-1][0]}" if val_acc else "it holds no val/acc"
    notes = recorded.notes + [_damage_note(f, stops) for f in files if f.problem]
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


def summarize(run: Run, target: float) -> dict[str, Any]:
    """One table row: best/final val accuracy, epochs to ``target``, best ensemble accuracy."""
    best_epoch, best = max(run.val_acc, key=lambda p: (p[1], -p[0]))
    reached = next((epoch for epoch, value in run.val_acc if value >= target), None)
    ensemble = max((v for _, v in run.ensemble_acc), default=None)
    return {
        "run": run.label, "schedule": run.schedule, "base_lr": run.base_lr, "max_lr": run.max_lr,
        "best": best, "best_epoch": best_epoch, "final": run.val_acc[-1][1], "epochs": run.val_acc[-1][0],
        "to_target": reached, "ensemble": ensemble, "unfinished": run.unfinished,
    }


#: said next to a value that is the last one read, not the run's last (its event file was cut short)
_UNFINISHED = " (unfinished)"


def format_table(rows: Sequence[dict[str, Any]], target: float) -> str:
    """A Markdown table of :func:`summarize` rows."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    has_ensemble = any(r["ensemble"] is not None for r in rows)
    head = ["run", "schedule", "base_lr", "max_lr", "best val/acc (epoch)", "final val/acc",
            f"epochs to {target:g}"] + (["best ensemble/val_acc"] if has_ensemble else [])
    table = []
    for r in rows:
        cells = [r["run"], r["schedule"], fmt(r["base_lr"]), fmt(r["max_lr"]),
                 f"{r['best']:.4f} ({r['best_epoch']})", f"{r['final']:.4f}{_UNFINISHED * r.get('unfinished', False)}",
                 str(r["to_target"]) if r["to_target"] is not None else f"not in {r['epochs']}"]
        if has_ensemble:
            cells.append("-" if r["ensemble"] is None else f"{r['ensemble']:.4f}")
        table.append(cells)
    return markdown(head, table)


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers are formatted by the caller."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: runs a figure's legend names; a larger sweep is drawn without one (the table names every run)
LEGEND_RUNS = 20


def runs_figure(runs: Sequence[Run], target: float | None = None) -> Any:
    """The comparison figure: val accuracy per epoch (left), the LR per step (right), one legend below.

    The runs share one legend under both panels (a run has the same colour in each), with
    long labels wrapped; the figure grows taller with the legend, so the panels keep their
    width and height whatever the labels. Beyond ``LEGEND_RUNS`` runs the legend is left out
    (a legend of thousands of rows would make the figure too tall to save) and the title says so.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    width = 58 if len(runs) > 1 else 110
    named = len(runs) <= LEGEND_RUNS
    labels = [textwrap.fill(f"{run.label} ({run.schedule}){_UNFINISHED * run.unfinished}", width) if named else None
              for run in runs]
    columns = 2 if len(runs) > 1 else 1
    rows = (sum(label.count("\n") + 1 for label in labels) / columns + len(runs) % columns if named else 0)
    rows += target is not None
    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.19 * rows), dpi=100, layout="constrained")
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        if run.val_acc:
            ax_acc.plot(*zip(*run.val_acc), color=color, lw=1.8, label=label)
        if run.ensemble_acc:
            ax_acc.plot(*zip(*run.ensemble_acc), color=color, lw=1.2, ls="--",
                        label=f"{label}: ensemble" if named else None)
        if run.lr:
            ax_lr.plot(*zip(*run.lr), color=color, lw=1.2)
    if target is not None:
        ax_acc.axhline(target, color="0.5", ls=":", lw=1, label=f"target {target:g}")
    ax_acc.set(xlabel="epoch", ylabel="val/acc", title="validation accuracy")
    ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="schedule (colours as on the left)")
    if not named:
        fig.suptitle(f"{len(runs)} runs: more than {LEGEND_RUNS}, so no legend; the table names each run", fontsize=9)
    lrs = [v for run in runs for _, v in run.lr if v > 0]
    if lrs and max(lrs) / min(lrs) > 50:
        ax_lr.set_yscale("log")
    for ax in (ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncols=columns, fontsize=7,
               frameon=False)
    return fig


def plot_runs(runs: Sequence[Run], path: str | Path, target: float | None = None) -> Path:
    """Write :func:`runs_figure` as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = runs_figure(runs, target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def grid_check(runs: Sequence[Run], metric: str = "val/acc", higher_is_better: bool = True) -> GridCheck | None:
    """The grid check of ``runs``, or None when they hold no grid and range test.

    Grid runs are those trained at a constant LR without a range test (``finder.bounds=[lr,lr]``);
    the reference is the first run whose bounds the range test found.

    Raises:
        ValueError: no grid run logged ``metric``.
    """
    grid = [r for r in runs if r.explicit is not None and math.isclose(*r.explicit, rel_tol=1e-9)]
    tests = [r for r in runs if r.explicit is None and r.base_lr is not None]
    if len(grid) < 2 or not tests:
        return None
    if not any(metric in r.last for r in grid):
        known = sorted({t for r in grid for t in r.last if not t.startswith(("lr", "range_test/", "epoch"))})
        raise ValueError(f"metric={metric}: no grid run logged it; choose one of {', '.join(known) or 'none logged'}")
    ref = tests[0]
    lrs = sorted(v for _, v in ref.lr)
    flat = bool(lrs) and lrs[-1] <= lrs[0] * 1.001
    return GridCheck(
        metric, higher_is_better, [r.explicit[0] for r in grid], [r.last.get(metric, math.nan) for r in grid],
        ref.base_lr, ref.max_lr, ref.last.get(metric), ref.schedule,
        *(ref.curve.get(tag, []) for tag in CURVE_TAGS),
        range_lr=lrs[len(lrs) // 2] if flat else None,
        unfinished_lrs=[r.explicit[0] for r in grid if r.unfinished], range_unfinished=ref.unfinished,
        range_shape=ref.shape, range_lr_moved=(lrs[0], lrs[-1]) if lrs and not flat else None,
    )


def _not_constant(runs: Sequence[Run]) -> list[str]:
    """Lines naming grid runs whose logged LR moved (a schedule that is not flat between [lr, lr])."""
    lines = []
    for r in runs:
        values = [v for _, v in r.lr if v > 0]
        if r.explicit is not None and values and max(values) > min(values) * 1.001:
            schedule = f" ({r.schedule})" if r.schedule != "?" else ""
            lines.append(f"note: grid run '{r.label}'{schedule} did not train a constant LR "
                         f"({min(values):.3g} to {max(values):.3g}); its point is not a constant-LR result")
    return lines


def search_check(runs: Sequence[Run], results: Path, metric: str = "val/acc") -> SearchCheck | None:
    """The best trial of an Optuna sweep (``results``: its ``optimization_results.yaml``) vs. one range test.

    The reference is job 0 (``+sweep=optuna_lr`` makes trial 0 a plain range test), else the
    first run whose bounds the range test found; None when no run ran one.
    """
    found = _read_yaml(results) or {}
    if "best_value" not in found:
        return None
    params = dict(found.get("best_params") or {})
    wanted = {f"{k}={v}" for k, v in params.items()}
    best = next((r for r in runs if wanted <= set(r.overrides)), None)
    tests = sorted((r for r in runs if r.explicit is None and r.base_lr is not None), key=lambda r: r.name != "0")
    if not tests:
        return None
    ref = tests[0]
    best_bounds = (best.base_lr, best.max_lr) if best is not None and best.base_lr is not None else None
    return SearchCheck(
        metric, float(found["best_value"]), params, best_bounds, best.scalars.get(metric, []) if best else [],
        (ref.base_lr, ref.max_lr), ref.last.get(metric, math.nan), ref.scalars.get(metric, []),
        ref.curve.get("range_test/lr", []), ref.curve.get("range_test/loss", []), num_trials=len(runs),
    )


def format_grid_check(check: GridCheck) -> str:
    """The grid as a Markdown table with the range test's bounds in LR order, then what they mean.

    A bound's row shows the grid's curve at that LR (linear in log LR between its two
    neighbours); the best grid run is marked ``best``, a run whose event file was cut short
    ``unfinished`` (its value is the last one read).
    """
    best_lr, best_value = check.best
    marks = lambda lr: ", ".join(["best"] * (lr == best_lr) + ["unfinished"] * (lr in check.unfinished_lrs))
    rows = [(lr, f"{v:.4f}", marks(lr)) for lr, v in zip(check.lrs, check.values)]
    for name, lr in (("base_lr", check.base_lr), ("max_lr", check.max_lr)):
        at = check.value_at(lr)
        rows.append((lr, "-" if at is None else f"({at:.4f} on the grid's curve)", f"range test {name}"))
    rows.sort(key=lambda row: row[0])
    lines = [f"grid check: final {check.metric} at {len(check.lrs)} constant LRs", "",
             markdown(["lr", check.metric, ""], [(f"{lr:.4g}", v, mark) for lr, v, mark in rows]), ""]
    lines += [f"range test {name}={lr:.4g}: {check.where(lr)}"
              for name, lr in (("base_lr", check.base_lr), ("max_lr", check.max_lr))]
    lines.append(f"best grid LR: {best_lr:.4g} ({check.metric} {best_value:.4f}), "
                 f"{_relation(best_lr, check.base_lr, check.max_lr)}")
    if check.range_value is not None:
        sign = 1 if check.higher_is_better else -1
        beaten = [v for v in check.values if sign * (check.range_value - v) > 0]
        trained = (f"{check.range_schedule} between the bounds" if check.range_schedule not in ("", "?")
                   else "its schedule not recorded")
        lines.append(f"range-test run ({trained}): {check.metric} "
                     f"{check.range_value:.4f}{_UNFINISHED * check.range_unfinished}, "
                     f"{check.range_value - best_value:+.4f} vs. the best grid LR, "
                     f"better than {len(beaten)} of {len(check.values)} grid runs")
        at = check.value_at(check.range_lr) if check.range_lr is not None else None
        if at is not None:
            lines[-1] += f"; it trained at a constant {check.range_lr:.4g}, where the grid's curve reads {at:.4f}"
    lines.append(check.fairness())
    return "\n".join(lines)


def _relation(lr: float, base_lr: float, max_lr: float) -> str:
    if lr < base_lr:
        return f"below base_lr ({base_lr / lr:.3g}x lower)"
    if lr > max_lr:
        return f"above max_lr ({lr / max_lr:.3g}x higher)"
    return "between base_lr and max_lr"


def format_search_check(check: SearchCheck) -> str:
    """Lines: the best trial, the reference range test, and the gap between them."""
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in check.best_params.items())
    bounds = (f"base_lr={check.best_bounds[0]:.4g} max_lr={check.best_bounds[1]:.4g}"
              if check.best_bounds else "bounds unknown")
    base, top = check.range_bounds
    return "\n".join([
        f"search check: best of {check.num_trials} trials: {check.metric} {check.best_value:.4f} ({params}; {bounds})",
        (f"one range test: base_lr={base:.4g} max_lr={top:.4g}, {check.metric} {check.range_value:.4f} "
         f"({check.range_value - check.best_value:+.4f} vs. the best trial; one run against the search's "
         f"{check.num_trials})"),
    ])


def compare(
    paths: Iterable[str | Path],
    target: float = 0.9,
    png: str | Path | None = "compare.png",
    *,
    metric: str = "val/acc",
    higher_is_better: bool | None = None,
    grid_png: str | Path | None = None,
    search_png: str | Path | None = None,
) -> str:
    """Read the runs under ``paths`` and return the table, plus the grid or search check when they hold one.

    Args:
        paths: run, multirun or log folders.
        target: accuracy for the "epochs to target" column.
        png: where to write the comparison figure (None: no figure).
        metric: the final scalar the grid and search checks compare (any tag the runs log).
        higher_is_better: whether a larger ``metric`` is better; None: False for a tag with
            ``loss`` in its name, True otherwise.
        grid_png: where to write the grid check's figure (None: no figure).
        search_png: where to write the search check's figure (None: no figure).

    Raises:
        FileNotFoundError: when a path holds no run.
        ValueError: for a target outside (0, 1], for an event file that holds no readable record, or when no
            run logged ``val/acc`` and no check applies.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target is an accuracy in (0, 1], got {target}")
    higher = ("loss" not in metric) if higher_is_better is None else higher_is_better
    runs = [load_run(log_dir, metrics=(metric,)) for log_dir in find_log_dirs(paths)]
    runs = [replace(run, label=label) for run, label in zip(runs, distinct_labels(runs))]
    sections = []
    table_runs = [r for r in runs if r.val_acc]
    for r in runs:
        for note in r.notes:
            print(note, file=sys.stderr)
        if not r.val_acc:
            print(f"skipped in the table: '{r.log_dir}' logged no val/acc", file=sys.stderr)
    if table_runs:
        sections.append(format_table([summarize(r, target) for r in table_runs], target))
        if png is not None:
            sections.append(f"PNG: {plot_runs(table_runs, png, target).resolve()}")
    grid = grid_check(runs, metric, higher)
    if grid is not None:
        sections.append("\n".join([format_grid_check(grid), *_not_constant(runs)]))
        if grid_png is not None:
            sections.append(f"grid check PNG: {plot_grid_check(grid, grid_png).resolve()}")
    results = next((Path(p) / OPTUNA_RESULTS for p in paths if (Path(p) / OPTUNA_RESULTS).is_file()), None)
    search = search_check(runs, results, metric) if results is not None else None
    if search is not None:
        sections.append(format_search_check(search))
        if search_png is not None:
            sections.append(f"search check PNG: {plot_search_check(search, search_png).resolve()}")
    if not sections:
        raise ValueError("none of the runs logged val/acc")
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_clr.cli.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run, multirun or log folders")
    parser.add_argument("--target", type=float, default=0.9, help="accuracy for 'epochs to target' (default 0.9)")
    parser.add_argument("--png", default="compare.png", help="where to write the figure (default compare.png)")
    parser.add_argument("--metric", default="val/acc", help="final scalar of the grid/search check (default val/acc)")
    parser.add_argument("--grid-png", default="lr_grid.png", help="grid check figure (default lr_grid.png)")
    parser.add_argument("--search-png", default="search.png", help="search check figure (default search.png)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.run_dirs, args.target, args.png, metric=args.metric, grid_png=args.grid_png,
                      search_png=args.search_png))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    return 0


class CompareRuns(HydraCallback):
    """Hydra callback: when a multirun ends, print the comparison of its jobs and write the figures.

    Args:
        target: accuracy for the "epochs to target" column.
        png: file name of the comparison figure, inside the sweep folder (None: none).
        metric: the final scalar of the grid and search checks, e.g. ``val/loss`` or a tag of
            the user's own model.
        higher_is_better: whether a larger ``metric`` is better; None infers it from the name.
        grid_png: file name of the grid check's figure (written when the sweep holds one).
        search_png: file name of the search check's figure (after an Optuna sweep).

    Example::

        python -m lightning_clr.run -m +schedule=triangular2,sgdr \\
            +hydra.callbacks.compare._target_=lightning_clr.cli.compare.CompareRuns
    """

    def __init__(self, target: float = 0.9, png: str | None = "compare.png", metric: str = "val/acc",
                 higher_is_better: bool | None = None, grid_png: str | None = "lr_grid.png",
                 search_png: str | None = "search.png") -> None:
        self.target, self.png, self.metric, self.higher_is_better = float(target), png, metric, higher_is_better
        self.grid_png, self.search_png = grid_png, search_png

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if not any(sweep.rglob(EVENT_GLOB)):
            print(f"compare: no TensorBoard files under {sweep}", flush=True)
            return
        where = lambda name: None if name is None else sweep / name
        try:
            text = compare([sweep], self.target, where(self.png), metric=self.metric,
                           higher_is_better=self.higher_is_better, grid_png=where(self.grid_png),
                           search_png=where(self.search_png))
        except ValueError as err:  # the runs are done; a comparison that cannot be made is no failure
            text = f"compare: {err}"
        print("\n" + text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
