"""How ``compare`` scales with the number of event files, side by side in one run.

    python benchmarks/compare_scaling.py                  # 1,000, 3,000 and 10,000 runs; a few minutes
    python benchmarks/compare_scaling.py --sizes 100 300  # a quick look

Each size is a multirun folder of that many jobs, laid out as ``python -m lightning_clr.run -m``
writes them: ``<job>/.hydra/{config,overrides}.yaml`` and ``<job>/tensorboard/version_0/`` with
one TensorBoard event file and ``hparams.yaml``. Every event file holds what a short run logs:
the LR per step, ``epoch``, ``val/acc``, ``val/loss``, ``train/loss`` per epoch, and the range
test's curve. Event files come from TensorBoard's own writer: ``--templates`` distinct files
are written, and each job gets a byte copy of one of them (the reading cost is the same and
the folder is built in seconds).

The script times :func:`lightning_clr.cli.compare.compare` (no figure) on each folder and prints
the seconds per event file. A reader that is linear in the number of files gives a ratio of
per-file time (largest size vs. smallest) near 1.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

EPOCHS = 5
STEPS_PER_EPOCH = 10
CURVE_POINTS = 40


def write_template(folder: Path, seed: int) -> Path:
    """One event file as a short run writes it, with TensorBoard's writer; returns its path."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    rng = random.Random(seed)
    writer = EventFileWriter(str(folder))

    def scalar(tag: str, value: float, step: int) -> None:
        writer.add_event(Event(step=step, wall_time=time.time(),
                               summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))

    for i in range(CURVE_POINTS):
        lr = 1e-5 * 10 ** (6 * i / (CURVE_POINTS - 1))
        scalar("range_test/lr", lr, i)
        scalar("range_test/loss", 2.3 - 0.01 * i + rng.random() * 0.01, i)
        scalar("range_test/loss_raw", 2.3 - 0.01 * i + rng.random() * 0.05, i)
    for step in range(EPOCHS * STEPS_PER_EPOCH):
        scalar("lr", 0.01 + 0.09 * (step % STEPS_PER_EPOCH) / STEPS_PER_EPOCH, step)
        scalar("lr-momentum", 0.9, step)
        scalar("train/loss_step", 2.0 - 0.02 * step + rng.random() * 0.1, step)
    for epoch in range(EPOCHS):
        step = (epoch + 1) * STEPS_PER_EPOCH - 1
        for tag, value in (("epoch", epoch), ("val/acc", 0.5 + 0.08 * epoch + rng.random() * 0.01),
                           ("val/loss", 1.5 - 0.2 * epoch), ("train/loss_epoch", 1.6 - 0.2 * epoch),
                           ("gap/loss", 0.1), ("gap/acc", -0.01)):
            scalar(tag, value, step)
    writer.close()
    (path,) = folder.glob("events.out.tfevents.*")
    return path


def make_sweep(root: Path, num_runs: int, templates: Sequence[Path]) -> Path:
    """A multirun folder of ``num_runs`` jobs, each with a copy of one template event file."""
    sweep = root / f"sweep_{num_runs}"
    for job in range(num_runs):
        run = sweep / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"seed": job, "finder": {"bounds": None}, "schedule": {"_target_": "lightning_clr.schedules.SGDR"}}))
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={job}", "+schedule=sgdr"]))
        log_dir = run / "tensorboard" / "version_0"
        log_dir.mkdir(parents=True)
        (log_dir / "hparams.yaml").write_text(yaml.safe_dump({"range_test/base_lr": 0.01, "range_test/max_lr": 0.1}))
        template = templates[job % len(templates)]
        shutil.copyfile(template, log_dir / template.name)
    return sweep


def time_compare(sweep: Path) -> tuple[float, int]:
    """Seconds ``compare`` takes on ``sweep`` (no figure), and the rows of its table."""
    from lightning_clr.cli.compare import compare

    start = time.perf_counter()
    text = compare([sweep], png=None)
    seconds = time.perf_counter() - start
    return seconds, sum(1 for line in text.splitlines() if line.startswith("| ") and "seed=" in line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000], help="event files per folder")
    parser.add_argument("--templates", type=int, default=20, help="distinct event files written with the writer")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        templates = []
        for i in range(args.templates):
            folder = root / "templates" / str(i)
            folder.mkdir(parents=True)
            templates.append(write_template(folder, seed=i))
        sweeps = {n: make_sweep(root, n, templates) for n in args.sizes}
        time_compare(make_sweep(root / "warm-up", 20, templates))  # first-call imports are not reading time
        if hasattr(os, "sync"):
            os.sync()  # the new files reach the disk now, not while a size is being timed
        print("| event files | seconds | ms per file | table rows |")
        print("|---|---|---|---|")
        per_file = {}
        for n, sweep in sweeps.items():
            seconds, rows = time_compare(sweep)
            per_file[n] = seconds / n
            print(f"| {n} | {seconds:.2f} | {1000 * per_file[n]:.2f} | {rows} |", flush=True)
        small, large = min(per_file), max(per_file)
        print(f"\nper-file time at {large} files / at {small} files: {per_file[large] / per_file[small]:.2f} "
              "(1 = linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
