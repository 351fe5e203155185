"""Run comparison: exact numbers from known event files, a real run, the PNG, the CLI and the Hydra callback."""

from __future__ import annotations

import builtins
import io
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot
import pytest
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_clr import schedules
from lightning_clr.cli import events as events_module
from lightning_clr.cli.compare import (
    LEGEND_RUNS,
    CompareRuns,
    Run,
    compare,
    distinct_labels,
    find_log_dirs,
    load_run,
    main,
    masked_crc32c,
    read_event_file,
    runs_figure,
    summarize,
)
from lightning_clr.cli.main import train
from tests.conftest import SMALL, compose_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS_PER_EPOCH = 10


def _fake_run(root: Path, name: str, config: dict, overrides: list[str], accs: list[float],
              bounds: tuple[float, float], ensemble: dict[int, float] | None = None, schedule: str | None = None) -> Path:
    """A Hydra run folder with known TensorBoard scalars, laid out as the entry point writes it.

    ``schedule``: what the range test logs as hparam ``range_test/schedule`` (None: a run that logged none).
    """
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    log_dir = run / "tensorboard" / "version_0"
    log_dir.mkdir(parents=True)
    hparams = {"range_test/base_lr": bounds[0], "range_test/max_lr": bounds[1]}
    (log_dir / "hparams.yaml").write_text(yaml.safe_dump({**hparams, **({"range_test/schedule": schedule}
                                                                        if schedule else {})}))
    with SummaryWriter(str(log_dir)) as writer:
        for step in range(len(accs) * STEPS_PER_EPOCH):
            writer.add_scalar("lr", bounds[0] + (bounds[1] - bounds[0]) * (step % 7) / 6, step)
        for epoch, acc in enumerate(accs):
            step = (epoch + 1) * STEPS_PER_EPOCH - 1
            writer.add_scalar("epoch", epoch, step)
            writer.add_scalar("val/acc", acc, step)
            if ensemble and epoch + 1 in ensemble:
                writer.add_scalar("ensemble/val_acc", ensemble[epoch + 1], step)
    return run


@pytest.fixture
def two_runs(tmp_path):
    sweep = tmp_path / "multirun"
    _fake_run(sweep, "0", {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}}, ["+schedule=sgdr"],
              [0.5, 0.8, 0.92, 0.9], (0.01, 0.1), ensemble={3: 0.93, 4: 0.95})
    _fake_run(sweep, "1", {"data": {"batch_size": 8}}, ["seed=1", "hydra.run.dir=x"], [0.4, 0.6, 0.7],
              (0.02, 0.3))
    return sweep


def test_rows_hold_the_logged_numbers(two_runs):
    sgdr, constant = (load_run(d) for d in find_log_dirs([two_runs]))
    assert (sgdr.label, sgdr.schedule, sgdr.base_lr, sgdr.max_lr) == ("+schedule=sgdr", "SGDR", 0.01, 0.1)
    assert (constant.label, constant.schedule) == ("seed=1", "?")  # it recorded no schedule: none is assumed
    assert [e for e, _ in sgdr.val_acc] == [1, 2, 3, 4]
    row = summarize(sgdr, target=0.9)
    assert row["best"] == pytest.approx(0.92) and row["best_epoch"] == 3
    assert row["final"] == pytest.approx(0.9) and row["to_target"] == 3
    assert row["ensemble"] == pytest.approx(0.95)
    row = summarize(constant, target=0.9)
    assert row["to_target"] is None and row["ensemble"] is None and row["epochs"] == 3
    assert summarize(constant, target=0.55)["to_target"] == 2


def test_bounds_of_a_run_without_range_test_come_from_its_config(tmp_path):
    run = _fake_run(tmp_path, "clr", {"finder": {"bounds": [0.001, 0.006]}}, ["+recipe=clr_cifar10"], [0.5, 0.6],
                    (1.0, 2.0))
    (run / "tensorboard" / "version_0" / "hparams.yaml").unlink()  # explicit bounds: nothing was logged
    loaded = load_run(run / "tensorboard" / "version_0")
    assert (loaded.base_lr, loaded.max_lr) == (0.001, 0.006)
    assert loaded.label == "clr"  # the recipe override is not a label; the folder name is


def test_table_and_png(two_runs, tmp_path):
    png = tmp_path / "out" / "cmp.png"
    table = compare([two_runs], target=0.9, png=png)
    lines = table.splitlines()
    assert lines[0] == ("| run | schedule | base_lr | max_lr | best val/acc (epoch) | final val/acc | epochs to 0.9 "
                        "| best ensemble/val_acc |")
    assert lines[2] == "| +schedule=sgdr | SGDR | 0.01 | 0.1 | 0.9200 (3) | 0.9000 | 3 | 0.9500 |"
    assert lines[3] == "| seed=1 | ? | 0.02 | 0.3 | 0.7000 (3) | 0.7000 | not in 3 | - |"
    assert png.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(png).shape  # two panels side by side, 12 in wide at 100 dpi
    assert width == 1200 and 450 < height < 520  # 4.5 in, plus the legend's rows below the panels


def test_cli(two_runs, tmp_path, capsys):
    png = tmp_path / "cli.png"
    assert main([str(two_runs / "0"), str(two_runs / "1"), "--target", "0.75", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| +schedule=sgdr | SGDR | 0.01 | 0.1 | 0.9200 (3) | 0.9000 | 2 |" in out
    assert f"PNG: {png.resolve()}" in out and png.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "run folder" in capsys.readouterr().err


def test_hydra_callback_compares_the_sweep(two_runs, capsys):
    CompareRuns(target=0.9).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(two_runs)}}}))
    out = capsys.readouterr().out
    assert "| seed=1 | ? |" in out
    assert (two_runs / "compare.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_a_real_run_with_snapshots(tmp_path):
    out = tmp_path / "run"
    overrides = [*SMALL, "model=mlp", "+schedule=sgdr", "schedule.cycle_epochs=0.5", "+callbacks=[snapshot,flatness]"]
    metrics = train(compose_config(overrides, out))
    (log_dir,) = find_log_dirs([out])
    run = load_run(log_dir)
    assert [e for e, _ in run.val_acc] == [1, 2]
    assert run.val_acc[-1][1] == pytest.approx(metrics["val/acc"], abs=1e-6)
    # SGDR cycles of 8 and 16 steps end at steps 8 and 24: two snapshots before the 2nd validation
    assert [e for e, _ in run.ensemble_acc] == [2]
    assert run.ensemble_acc[-1][1] == pytest.approx(metrics["ensemble/val_acc"], abs=1e-6)
    assert run.base_lr is not None and run.base_lr < run.max_lr
    assert sorted(p.name for p in (log_dir / "checkpoints" / "snapshots").iterdir()) == ["cycle_1.pt", "cycle_2.pt"]
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("flatness/sigma_0.1")] == [8, 24]  # probed with the snapshots
    png = tmp_path / "real.png"
    table = compare([out], target=0.5, png=png)  # no .hydra folder: named by its log folder
    # no Hydra folder: named by its log folder; the schedule is the one the range test recorded
    assert run.shape.startswith("SGDR(cycle_epochs=0.5, ") and "num_cycles=" in run.shape
    assert f"| version_0 | SGDR | {run.base_lr:.3g} | {run.max_lr:.3g} |" in table
    assert matplotlib.image.imread(png).shape[1] == 1200


def _run(tmp_path: Path, name: str, overrides: list[str]) -> Run:
    return Run(tmp_path / name / "tensorboard" / "version_0", " ".join(overrides), "SGDR", 0.01, 0.1,
               [(1, 0.5), (2, 0.7)], lr=[(0, 0.01), (5, 0.1)], overrides=overrides, name=name)


def test_labels_are_the_overrides_that_differ(tmp_path):
    shared = ["data=synthetic", "trainer.max_epochs=20", "model=mlp"]
    runs = [_run(tmp_path, "0", ["+schedule=sgdr", *shared, "seed=0"]),
            _run(tmp_path, "1", ["+schedule=one_cycle", *shared, "seed=0"]),
            _run(tmp_path, "2", ["+schedule=one_cycle", *shared, "seed=1"])]
    assert distinct_labels(runs) == ["+schedule=sgdr seed=0", "+schedule=one_cycle seed=0",
                                     "+schedule=one_cycle seed=1"]
    # a long float (an Optuna draw) reads at 4 significant digits; short values stay as written
    drawn = [_run(tmp_path, "0", ["search.base_lr=0.006524239440019404", "finder.bounds=[0.001,0.001]"]),
             _run(tmp_path, "1", ["search.base_lr=0.013437888938214017", "finder.bounds=[0.1,0.1]"])]
    assert distinct_labels(drawn) == ["search.base_lr=0.006524 finder.bounds=[0.001,0.001]",
                                      "search.base_lr=0.01344 finder.bounds=[0.1,0.1]"]
    # nothing differs: the job folder names them; a lone run keeps its overrides
    twins = [_run(tmp_path, "0", shared), _run(tmp_path, "1", shared)]
    assert distinct_labels(twins) == ["0", "1"]
    assert distinct_labels(twins[:1]) == [" ".join(shared)]
    # an override only one run has tells it apart
    assert distinct_labels([_run(tmp_path, "0", shared), _run(tmp_path, "1", [*shared, "+callbacks=snapshot"])]) \
        == ["0", "+callbacks=snapshot"]


def _axes_widths(runs: list[Run]) -> list[float]:
    fig = runs_figure(runs, target=0.9)
    fig.canvas.draw()  # constrained layout places the axes while drawing
    widths = [ax.get_position().width for ax in fig.axes]
    matplotlib.pyplot.close(fig)
    return widths


def test_long_labels_leave_the_panels_their_width(tmp_path):
    """Full multirun override strings as labels: the legend goes below the panels, which keep their width."""
    short = [_run(tmp_path, str(i), [f"+schedule=s{i}"]) for i in range(4)]
    long_overrides = ["+recipe=mnist1d_compare", "data=synthetic", "trainer.max_epochs=20", "model=mlp",
                      "callbacks.snapshot.num_snapshots=3", "finder.num_steps=100", "finder.rule=valley",
                      "trainer.accumulate_grad_batches=2"]
    long = [replace(r, label=" ".join([*long_overrides, f"+schedule=schedule_number_{i}", "x" * 40]))
            for i, r in enumerate(short)]
    base, wide = _axes_widths(short), _axes_widths(long)
    assert len(base) == len(wide) == 2
    assert all(w > 0.38 for w in base)  # two panels side by side on a 12 in figure
    assert all(w >= 0.95 * b for w, b in zip(wide, base)), (base, wide)


def test_grid_check_reads_the_bounds_against_the_grid(tmp_path):
    """Four constant-LR runs and a range-test run with known numbers: the check's table and lines, exactly."""
    sweep = tmp_path / "grid"
    for i, (lr, final) in enumerate([(0.001, 0.5), (0.01, 0.8), (0.1, 0.9), (1.0, 0.3)]):
        _fake_run(sweep, str(i), {"finder": {"bounds": [lr, lr]}}, [f"finder.bounds=[{lr},{lr}]"], [0.2, final],
                  (lr, lr))
        (sweep / str(i) / "tensorboard" / "version_0" / "hparams.yaml").unlink()  # bounds given: nothing logged
    _fake_run(sweep, "4", {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}, "finder": {"bounds": None}},
              ["finder.bounds=null"], [0.4, 0.85], (0.02, 0.2))
    # a grid run whose LR moved although its bounds were equal (1cycle anneals below base_lr)
    _fake_run(sweep, "5", {"finder": {"bounds": [0.03, 0.03]}}, ["finder.bounds=[0.03,0.03]"], [0.2, 0.6], (0.01, 0.03))
    png = tmp_path / "grid.png"
    out = compare([sweep], png=None, grid_png=png)
    table = out[out.index("grid check:"):]
    # 0.8 + ln(2) / ln(3) * (0.6 - 0.8) = 0.6738, linear in log LR between 0.01 and 0.03
    assert "\n| 0.02 | (0.6738 on the grid's curve) | range test base_lr |\n| 0.03 | 0.6000 |  |\n" in table
    # 0.9 + log10(2) * (0.3 - 0.9) = 0.7194
    assert "\n| 0.1 | 0.9000 | best |\n| 0.2 | (0.7194 on the grid's curve) | range test max_lr |\n" in table
    assert "range test base_lr=0.02: between grid LRs 0.01 and 0.03" in out
    assert "range test max_lr=0.2: between grid LRs 0.1 and 1" in out
    assert "best grid LR: 0.1 (val/acc 0.9000), between base_lr and max_lr" in out
    assert "range-test run (SGDR between the bounds): val/acc 0.8500, -0.0500 vs. the best grid LR, " \
           "better than 4 of 5 grid runs" in out
    assert "note: grid run 'finder.bounds=[0.03,0.03]' did not train a constant LR (0.01 to 0.03)" in out
    # the range-test run's schedule is its config's SGDR node: a schedule against the grid's constants
    assert ("range-test run: SGDR() between the bounds (its LR moved from 0.02 to 0.2), a schedule, while every grid "
            "run trains a constant LR: the comparison mixes a schedule against constants") in out
    assert png.read_bytes()[:8] == PNG_MAGIC and matplotlib.image.imread(png).shape[:2] == (700, 800)
    # lower is better for a loss: the same numbers, read as losses, put the best grid LR at 1.0
    assert "best grid LR: 1 (val/acc 0.3000), above max_lr (5x higher)" in compare([sweep], png=None,
                                                                                   higher_is_better=False)


def test_grid_check_places_a_constant_range_test_run_on_the_grid(tmp_path):
    """A range-test run that trained at one constant LR is read against the grid's curve at that LR."""
    sweep = tmp_path / "grid"
    for i, (lr, final) in enumerate([(0.01, 0.6), (0.1, 0.9)]):
        _fake_run(sweep, str(i), {"finder": {"bounds": [lr, lr]}}, [f"finder.bounds=[{lr},{lr}]"], [final], (lr, lr))
    _fake_run(sweep, "2", {"finder": {"bounds": None}, "schedule": {"_target_": "lightning_clr.schedules.Constant"}},
              ["finder.bounds=null"], [0.8], (0.0316, 0.0316), schedule="Constant(position=0.5)")
    out = compare([sweep], png=None)
    # 0.6 + log10(3.16) * (0.9 - 0.6) = 0.7499
    assert ("range-test run (Constant between the bounds): val/acc 0.8000, -0.1000 vs. the best grid LR, better than "
            "1 of 2 grid runs; it trained at a constant 0.0316, where the grid's curve reads 0.7499") in out
    assert ("range-test run: Constant(position=0.5), a constant LR at 0.0316 like every grid run: a like-for-like "
            "comparison of the LR the range test picked") in out


def test_a_symlinked_job_folder_is_in_the_table(tmp_path):
    """A sweep folder whose second run is a link to a run elsewhere: both runs are read."""
    sweep = tmp_path / "sweep"
    _fake_run(sweep, "0", {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}}, ["+schedule=sgdr"], [0.5, 0.6],
              (0.01, 0.1))
    _fake_run(tmp_path / "elsewhere", "1", {}, ["seed=1"], [0.4, 0.7], (0.01, 0.1))
    (sweep / "1").symlink_to(tmp_path / "elsewhere" / "1", target_is_directory=True)
    (sweep / "loop").symlink_to(sweep, target_is_directory=True)  # a link loop is walked once
    dirs = find_log_dirs([sweep])
    assert [d.relative_to(sweep).parts[0] for d in dirs] == ["0", "1"]


# ---------------------------------------------------------------------------- reading: once, and only what is shown


def _records(event_file: Path) -> int:
    """Whole records in ``event_file``, counted by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return sum(1 for _ in RawEventFileLoader(str(event_file)).Load())


def test_each_event_file_is_opened_once_and_each_record_parsed_once(two_runs, monkeypatch):
    events = sorted(two_runs.rglob("events.out.tfevents.*"))
    records = sum(_records(f) for f in events)
    opened: Counter[str] = Counter()
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if "tfevents" in str(file):
            opened[str(file)] += 1
        return real_open(file, *args, **kwargs)

    parsed = []
    real_parse = events_module._parse_event
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(events_module, "_parse_event", lambda payload: parsed.append(payload) or real_parse(payload))
    compare([two_runs], png=None)
    assert dict(opened) == {str(f): 1 for f in events}
    assert len(parsed) == records == 2 + 4 * (STEPS_PER_EPOCH + 2) + 2 + 3 * (STEPS_PER_EPOCH + 2)


def test_the_reader_keeps_what_tensorboard_reads(two_runs):
    """Kept tags hold every value TensorBoard's reader returns; other tags only their last value."""
    (event_file,) = (two_runs / "0").rglob("events.out.tfevents.*")
    read = read_event_file(event_file, keep=lambda tag: tag in ("val/acc", "lr"))
    events = EventAccumulator(str(event_file.parent), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("val/acc", "lr"):
        assert read.series[tag] == [(e.step, e.value) for e in events.Scalars(tag)]
    assert set(read.series) == {"val/acc", "lr"}
    assert read.last == {t: events.Scalars(t)[-1].value for t in events.Tags()["scalars"]}
    assert (read.records, read.problem) == (_records(event_file), None)


def test_crc32c_matches_tensorboards():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    rng = random.Random(0)
    chunks = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 7, 8, 8, 45, 300, 3)]
    assert masked_crc32c(chunks) == [reference(c) for c in chunks]


def test_a_corrupt_record_stops_the_reading_where_tensorboard_stops(two_runs):
    (event_file,) = (two_runs / "0").rglob("events.out.tfevents.*")
    data = bytearray(event_file.read_bytes())
    data[data.rindex(b"val/acc")] ^= 0x01  # one bit of the last val/acc record's tag
    event_file.write_bytes(bytes(data))
    read = read_event_file(event_file, keep=lambda tag: tag == "val/acc")
    assert (read.records, read.problem) == (_records(event_file), "corrupt")
    assert [v for _, v in read.series["val/acc"]] == pytest.approx([0.5, 0.8, 0.92])  # the 4th was lost
    run = load_run(event_file.parent)
    assert len(run.notes) == 1 and "corrupt record" in run.notes[0] and str(event_file) in run.notes[0]


# ---------------------------------------------------------------------------- damaged and broken files


def _cut_tail(run: Path, nbytes: int = 20) -> Path:
    """Cut the last ``nbytes`` of the run's event file: its writer was killed in the middle of its last record."""
    (events,) = run.rglob("events.out.tfevents.*")
    events.write_bytes(events.read_bytes()[:-nbytes])
    return events


def test_a_run_whose_event_file_lost_its_tail_shows_as_unfinished(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    sgdr = {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}}
    _fake_run(sweep, "0", sgdr, ["seed=0"], [0.5, 0.8, 0.95], (0.01, 0.1))
    events = _cut_tail(_fake_run(sweep, "1", sgdr, ["seed=1"], [0.4, 0.6, 0.7], (0.01, 0.1)))
    out = compare([sweep], target=0.9, png=None)
    assert "| seed=0 | SGDR | 0.01 | 0.1 | 0.9500 (3) | 0.9500 | 3 |" in out  # the intact run reads as before
    # the last record (val/acc 0.7 at epoch 3) was cut: epoch 2's value is the last read, and says so
    assert "| seed=1 | SGDR | 0.01 | 0.1 | 0.6000 (2) | 0.6000 (unfinished) | not in 2 |" in out
    err = capsys.readouterr().err
    assert f"note: {events} ends in a truncated record" in err and "stops at epoch 2" in err


def test_the_grid_check_marks_an_unfinished_run(tmp_path):
    sweep = tmp_path / "grid"
    for i, lr in enumerate([0.01, 0.1, 1.0]):
        _fake_run(sweep, str(i), {"finder": {"bounds": [lr, lr]}}, [f"finder.bounds=[{lr},{lr}]"], [0.3, 0.5 + i / 10],
                  (lr, lr))
    _cut_tail(sweep / "1")  # the 0.1 run lost its final val/acc (0.6): its 0.3 of epoch 1 is the last read
    _fake_run(sweep, "3", {"finder": {"bounds": None}}, ["finder.bounds=null"], [0.2, 0.65], (0.02, 0.2))
    _cut_tail(sweep / "3")
    out = compare([sweep], png=None)
    assert "\n| 0.1 | 0.3000 | unfinished |\n" in out and "\n| 1 | 0.7000 | best |\n" in out
    assert "val/acc 0.2000 (unfinished), -0.5000 vs. the best grid LR" in out


@pytest.mark.parametrize("text,problem", [
    ("range_test/base_lr: [0.01\n", "not plain YAML data at line 2"),
    ("!!python/object/apply:os.system ['touch {marker}']\n",
     "not plain YAML data at line 1 (could not determine a constructor for the tag 'tag:yaml.org,2002:python/"),
    ("- 0.01\n- 0.1\n", "holds a list where a dict belongs"),
    ("range_test/base_lr: low\nrange_test/max_lr: 0.1\n", "range_test/base_lr in {path} is 'low', not a number"),
])
def test_a_broken_hparams_file_is_one_line_and_the_other_runs_are_compared(tmp_path, capsys, text, problem):
    sweep = tmp_path / "multirun"
    sgdr = {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}}
    _fake_run(sweep, "0", sgdr, ["seed=0"], [0.5, 0.8], (0.01, 0.1))
    broken = _fake_run(sweep, "1", sgdr, ["seed=1"], [0.4, 0.6], (0.02, 0.2)) / "tensorboard" / "version_0" / "hparams.yaml"
    marker = tmp_path / "ran"
    broken.write_text(text.format(marker=marker))
    assert main([str(sweep), "--png", str(tmp_path / "c.png")]) == 0
    out, err = capsys.readouterr()
    assert "| seed=0 | SGDR | 0.01 | 0.1 | 0.8000 (2) | 0.8000 |" in out
    assert "| seed=1 | SGDR | - | - | 0.6000 (2) | 0.6000 |" in out  # compared, without the bounds it lost
    (line,) = [line for line in err.splitlines() if str(broken) in line]
    assert line.startswith("note: run '1': ") and problem.format(path=broken) in line
    assert "Traceback" not in err and not marker.exists()


def test_a_broken_hydra_config_is_one_line_and_the_run_keeps_its_numbers(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    _fake_run(sweep, "0", {"schedule": {"_target_": "lightning_clr.schedules.SGDR"}}, ["seed=0"], [0.5, 0.8], (0.01, 0.1))
    run = _fake_run(sweep, "1", {}, ["seed=1"], [0.4, 0.6], (0.02, 0.2))
    (run / ".hydra" / "config.yaml").write_text("schedule: {_target_: [\n")
    (run / ".hydra" / "overrides.yaml").write_text("seed: 1\n")
    out = compare([sweep], png=None)
    assert "| seed=0 | SGDR | 0.01 | 0.1 | 0.8000 (2) |" in out
    assert "| 1 | ? | 0.02 | 0.2 | 0.6000 (2) |" in out  # named by its folder; its schedule is unknown
    err = capsys.readouterr().err
    assert f"note: run '1': skipped {run / '.hydra' / 'config.yaml'}: not plain YAML data at line 2" in err
    assert f"note: run '1': skipped {run / '.hydra' / 'overrides.yaml'}: holds a dict where a list belongs" in err


# ---------------------------------------------------------------------------- the grid check names what ran


def _grid(sweep: Path, lrs: list[float], finals: list[float]) -> None:
    """Constant-LR runs as ``+sweep=lr_grid`` trains them without ``+schedule``: no schedule node, no hparams."""
    for i, (lr, final) in enumerate(zip(lrs, finals)):
        _fake_run(sweep, str(i), {"finder": {"bounds": [lr, lr]}}, [f"finder.bounds=[{lr},{lr}]"], [0.2, final],
                  (lr, lr))
        (sweep / str(i) / "tensorboard" / "version_0" / "hparams.yaml").unlink()


def test_a_range_test_run_without_a_schedule_node_is_named_by_what_it_recorded(tmp_path):
    """No ``+schedule``: the config has no schedule node, the range test recorded the default it installed."""
    sweep = tmp_path / "grid"
    _grid(sweep, [0.001, 0.01, 0.1], [0.5, 0.7, 0.6])
    triangular = "Triangular(step_epochs=None, step_size=None, num_cycles=1, cycle_momentum=False)"
    _fake_run(sweep, "3", {"finder": {"bounds": None}}, ["finder.bounds=null"], [0.4, 0.75], (0.005, 0.05),
              schedule=triangular)
    out = compare([sweep], png=None)
    assert "| finder.bounds=null | Triangular | 0.005 | 0.05 | 0.7500 (2) |" in out
    assert "| finder.bounds=[0.001,0.001] | ? | 0.001 | 0.001 |" in out  # recorded nothing: not assumed
    assert "range-test run (Triangular between the bounds): val/acc 0.7500, +0.0500 vs. the best grid LR" in out
    assert (f"range-test run: {triangular} between the bounds (its LR moved from 0.005 to 0.05), a schedule, while "
            "every grid run trains a constant LR: the comparison mixes a schedule against constants, so it measures "
            "the schedule and the pick together (+schedule=constant compares the pick alone)") in out
    assert "Constant" not in out


def test_a_range_test_run_that_recorded_nothing_is_not_called_constant(tmp_path):
    sweep = tmp_path / "grid"
    _grid(sweep, [0.001, 0.01], [0.5, 0.7])
    _fake_run(sweep, "2", {"finder": {"bounds": None}}, ["finder.bounds=null"], [0.4, 0.75], (0.005, 0.05))
    (next((sweep / "2").rglob("events.out.tfevents.*"))).unlink()
    with SummaryWriter(str(sweep / "2" / "tensorboard" / "version_0")) as writer:  # val/acc only, no LR
        writer.add_scalar("val/acc", 0.75, 0)
    out = compare([sweep], png=None)
    assert "range-test run (its schedule not recorded): val/acc 0.7500" in out
    assert ("range-test run: its schedule was not recorded and it logged no LR, so whether it trained a constant LR "
            "as the grid does is unknown") in out


@pytest.mark.slow
@pytest.mark.parametrize("schedule,constant", [([], False), (["+schedule=constant"], True)])
def test_the_grid_check_names_the_schedule_a_real_range_test_run_trained(tmp_path, schedule, constant):
    """A real run of the entry point, with and without ``+schedule``, beside a grid written as its runs write it."""
    sweep = tmp_path / "grid"
    _grid(sweep, [0.01, 0.1], [0.5, 0.6])
    out = sweep / "2"
    cfg = compose_config([*SMALL, *schedule, "trainer.log_every_n_steps=1"], out)
    train(cfg)
    (out / ".hydra").mkdir()  # what Hydra writes next to the run
    (out / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["finder.bounds=null", *schedule]))
    spec = schedules.Constant() if constant else schedules.WSD()  # LRRangeTest's default without +schedule
    (hparams,) = out.rglob("hparams.yaml")
    assert yaml.safe_load(hparams.read_text())["range_test/schedule"] == repr(spec)
    text = compare([sweep], png=None)
    name = type(spec).__name__
    label = " ".join(["finder.bounds=null", *schedule])
    assert f"\n| {label} | {name} | " in text
    assert f"range-test run ({name} between the bounds): val/acc " in text
    if constant:
        assert f"range-test run: {spec!r}, a constant LR at " in text and "a like-for-like comparison" in text
    else:
        assert f"range-test run: {spec!r} between the bounds (its LR moved from " in text
        assert "the comparison mixes a schedule against constants" in text


def test_a_large_sweep_is_drawn_without_a_legend(tmp_path):
    """Thousands of runs would need a legend too tall to save: beyond LEGEND_RUNS the title says the table names them."""
    runs = [_run(tmp_path, str(i), [f"seed={i}"]) for i in range(LEGEND_RUNS + 1)]
    fig = runs_figure(runs, target=0.9)
    assert tuple(fig.get_size_inches()) == pytest.approx((12, 4.5 + 0.19))  # one legend row: the target
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["target 0.9"]
    assert fig._suptitle.get_text() == f"{LEGEND_RUNS + 1} runs: more than {LEGEND_RUNS}, so no legend; the table " \
                                       "names each run"
    assert len(fig.axes[0].lines) == LEGEND_RUNS + 2  # every run's curve is drawn, and the target
    matplotlib.pyplot.close(fig)
    named = runs_figure(runs[:LEGEND_RUNS], target=0.9)
    assert len(named.legends[0].get_texts()) == LEGEND_RUNS + 1
    matplotlib.pyplot.close(named)


@pytest.mark.slow
def test_the_lr_grid_sweep_without_a_schedule_names_what_its_range_test_run_trained(tmp_path):
    """``python -m lightning_clr.run -m +sweep=lr_grid`` with no ``+schedule``: the check names WSD, not Constant."""
    sweep = tmp_path / "grid"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "lightning_clr.run", "-m", "+sweep=lr_grid", "grid.num_points=2",
                           "data=synthetic", "trainer.max_epochs=1", "finder.num_steps=20", "trainer.log_every_n_steps=1",
                           "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (hparams,) = (sweep / "2").rglob("hparams.yaml")
    assert yaml.safe_load(hparams.read_text())["range_test/schedule"] == repr(schedules.WSD())
    assert "range-test run (WSD between the bounds): val/acc " in proc.stdout
    assert f"range-test run: {schedules.WSD()!r} between the bounds (its LR moved from " in proc.stdout
    assert "the comparison mixes a schedule against constants" in proc.stdout and "Constant" not in proc.stdout
