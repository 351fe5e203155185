"""Speed benchmark: what the callback costs per step, per range test, on disk and in memory.

    pip install -e ".[bench]" && python benchmarks/speed.py       # about 1 minute on 2 cores

Same model and data as ``outcome.py`` (1-D CNN + SGD on MNIST-1D, batch 100, 40 steps per
epoch). Every ratio is ours / theirs, measured in one process with the two sides
alternating (A B, B A, A B, ...), and reported as the median (and interquartile range) of
the pair ratios, so load from other processes hits both sides alike.

1. Step time after the range test: ``LRRangeTest`` installing ``Triangular`` vs plain
   Lightning with torch's ``CyclicLR`` configured by hand in ``configure_optimizers``
   (same bounds); and ``SGDR`` vs torch's ``CosineAnnealingWarmRestarts``. A step is the
   time between consecutive ``on_train_batch_end`` calls within an epoch, epochs after the
   first; each run contributes the 25th percentile of its steps (interruptions by other
   processes only ever lengthen a step). Beside it, the one piece of per-step work that
   differs between the sides, ``scheduler.step()``, timed alone.
2. Range-test wall time (the whole ``on_fit_start``: snapshot, sweep, restore, selection,
   schedule) vs an epoch of as many plain training steps (no validation), and vs
   Lightning's ``Tuner.lr_find`` with the same number of steps (its ``on_fit_start``).
3. Bytes written while each range test runs (``wchar`` of ``/proc/self/io``, every write
   to any file; the working directory and ``default_root_dir`` are a fresh temporary
   folder), and the range test's in-memory snapshot relative to the bytes of the model's
   parameters and buffers plus the optimizer's state, for SGD (momentum) and AdamW.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
import timeit
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import lightning as L
import torch
from common import TASKS, machine, mnist1d, setup, steps_per_epoch, trainer
from lightning.pytorch.callbacks.lr_finder import LearningRateFinder
from lightning.pytorch.tuner import Tuner
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, CyclicLR

from lightning_clr import LRRangeTest, schedules
from lightning_clr.cli.compare import markdown
from lightning_clr.range_test.restore import TrainingState
from lightning_clr.range_test.settings import MIN_STEPS

BOUNDS = (0.05, 0.25)  # for the hand-configured side; the time per step does not depend on them


class StepTimer(L.Callback):
    """Times between consecutive ``on_train_batch_end`` calls, epochs after the first."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # a step never spans an epoch boundary (validation runs there)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None and trainer.current_epoch >= 1:
            self.steps.append(now - self._last)
        self._last = now

    @property
    def typical(self) -> float:
        """The 25th percentile: bursts of other processes on a shared machine land in the upper tail."""
        return statistics.quantiles(self.steps, n=4)[0]


class EpochTimer(L.Callback):
    """Wall time of each training epoch (start to end of its batches)."""

    def __init__(self) -> None:
        self.epochs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(time.perf_counter() - self._start)


@contextlib.contextmanager
def timed_hook(cls: type, record: list[float]):
    """Append the wall time of every ``cls.on_fit_start`` call to ``record`` (exceptions included)."""
    original = cls.on_fit_start

    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            record.append(time.perf_counter() - start)

    with mock.patch.object(cls, "on_fit_start", wrapper):
        yield


def hand_scheduled(task, make_scheduler: Callable[[torch.optim.Optimizer], object]) -> L.LightningModule:
    """The task's model at ``max_lr`` whose ``configure_optimizers`` also returns a per-step scheduler."""
    model = task.model(BOUNDS[1])
    make_optimizer = model.configure_optimizers

    def configure_optimizers():
        optimizer = make_optimizer()
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": make_scheduler(optimizer), "interval": "step"}}

    model.configure_optimizers = configure_optimizers
    return model


def spread(ratios: list[float]) -> str:
    """The interquartile range of the pair ratios (all of them with fewer than 4 pairs)."""
    if len(ratios) < 4:
        return f"{min(ratios):.3f}–{max(ratios):.3f}"
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"{q1:.3f}–{q3:.3f}"


def comparisons(per_epoch: int) -> dict[str, tuple[schedules.Schedule, Callable]]:
    """Our schedule spec and the same schedule configured by hand with torch, per comparison."""
    return {
        "Triangular vs CyclicLR": (
            schedules.Triangular(step_epochs=2),
            lambda opt: CyclicLR(opt, BOUNDS[0], BOUNDS[1], step_size_up=2 * per_epoch, cycle_momentum=False)),
        "SGDR vs CosineAnnealingWarmRestarts": (
            schedules.SGDR(cycle_epochs=1, cycle_mult=2),
            lambda opt: CosineAnnealingWarmRestarts(opt, T_0=per_epoch, T_mult=2, eta_min=BOUNDS[0])),
    }


def step_times(dm, epochs: int, pairs: int, root: str) -> tuple[list[list[str]], dict[str, float]]:
    """Rows of the step-time table, and theirs ms/step per comparison."""
    task, per_epoch = TASKS["cnn-sgd"], steps_per_epoch(dm)
    trainer(1, root).fit(task.model(), datamodule=dm)  # warm-up, not timed: first-call costs
    rows, theirs_ms = [], {}
    for name, (spec, make_scheduler) in comparisons(per_epoch).items():
        ours, theirs, ratios = [], [], []
        for i in range(pairs):
            times = {}
            for side in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
                L.seed_everything(i, verbose=False)
                timer = StepTimer()
                if side == "ours":
                    model = task.model()
                    callbacks = [LRRangeTest(schedule=spec, num_steps=max(MIN_STEPS, per_epoch), progress_bar=False), timer]
                else:
                    model, callbacks = hand_scheduled(task, make_scheduler), [timer]
                trainer(epochs, root, callbacks).fit(model, datamodule=dm)
                times[side] = timer.typical
            ours.append(times["ours"])
            theirs.append(times["theirs"])
            ratios.append(times["ours"] / times["theirs"])
        rows.append([name, f"{1e3 * statistics.median(ours):.2f}", f"{1e3 * statistics.median(theirs):.2f}",
                     f"{statistics.median(ratios):.3f}", spread(ratios), "<= 1.01"])
        theirs_ms[name] = 1e3 * statistics.median(theirs)
    return rows, theirs_ms


def scheduler_costs(per_epoch: int, step_ms: dict[str, float], calls: int = 2000) -> list[list[str]]:
    """Time of one ``scheduler.step()``, ours vs theirs: the only per-step work that differs.

    ``LRRangeTest`` has no per-batch hook; after the range test the two sides differ only
    in the scheduler object. Each side steps its scheduler ``calls`` times, alternating,
    7 times; the fastest repeat counts (timeit's convention: slower ones were interrupted).
    """
    rows = []
    for name, (spec, make_scheduler) in comparisons(per_epoch).items():
        ours_opt = TASKS["cnn-sgd"].model().configure_optimizers()
        theirs_opt = TASKS["cnn-sgd"].model(BOUNDS[1]).configure_optimizers()
        sides = {"ours": spec.build(ours_opt, *BOUNDS, steps_per_epoch=per_epoch, total_steps=None),
                 "theirs": make_scheduler(theirs_opt)}
        best = {side: float("inf") for side in sides}
        with warnings.catch_warnings():  # stepping without optimizer.step() is the point here
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*before.*optimizer.step.*")
            for _ in range(7):
                for side, s in sides.items():
                    best[side] = min(best[side], timeit.timeit(s.step, number=calls))
        ours_us, theirs_us = (1e6 * best[side] / calls for side in ("ours", "theirs"))
        diff = round(ours_us - theirs_us, 1) + 0.0  # + 0.0: no "-0.0"
        share = round(diff / (1e3 * step_ms[name]), 4) + 0.0
        rows.append([name, f"{ours_us:.1f}", f"{theirs_us:.1f}", f"{diff:+.1f}", f"{share:+.2%}"])
    return rows


def wchar() -> int | None:
    """Bytes this process has passed to write calls so far (Linux), or None."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return None


@contextlib.contextmanager
def fresh_dir():
    """A new temporary folder, also the working directory, for one run."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lightning_clr_speed_") as path:
        os.chdir(path)
        try:
            yield path
        finally:
            os.chdir(cwd)


def range_tests(dm, pairs: int, epochs: int) -> tuple[list[list[str]], dict[str, float]]:
    """Range test vs plain steps vs ``Tuner.lr_find``; also the bytes each writes."""
    task, steps = TASKS["cnn-sgd"], max(MIN_STEPS, steps_per_epoch(dm))
    ours_t, plain_t, lightning_t = [], [], []
    written = {"ours": [], "lightning": []}
    left = {"ours": 0, "lightning": 0}
    for i in range(pairs):
        order = ("ours", "plain", "lightning") if i % 2 == 0 else ("lightning", "plain", "ours")
        for side in order:
            L.seed_everything(i, verbose=False)
            model = task.model()
            with fresh_dir() as root, contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                if side == "ours":
                    # max_epochs=1 keeps the run short; only on_fit_start (the range test) is timed
                    before = wchar()
                    with timed_hook(LRRangeTest, ours_t):
                        finder = LRRangeTest(num_steps=steps, progress_bar=False)
                        stop = _StopAfterFitStart()
                        trainer(1, root, [finder, stop]).fit(model, datamodule=dm)
                    after = wchar()
                elif side == "plain":
                    timer = EpochTimer()
                    trainer(1, root, [timer], limit_val_batches=0).fit(model, datamodule=dm)
                    plain_t.append(timer.epochs[0] * steps / steps_per_epoch(dm))
                    continue
                else:
                    before = wchar()
                    with timed_hook(LearningRateFinder, lightning_t):
                        Tuner(trainer(epochs, root)).lr_find(model, datamodule=dm, num_training=steps,
                                                              update_attr=False)
                    after = wchar()
                if before is not None and after is not None:
                    written[side].append(after - before)
                left[side] = max(left[side], sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()))
    med = statistics.median
    ratio_plain = [o / p for o, p in zip(ours_t, plain_t)]
    ratio_lightning = [o / lt for o, lt in zip(ours_t, lightning_t)]
    rows = [
        [f"range test ({steps} steps) vs {steps} plain training steps", f"{1e3 * med(ours_t):.0f}",
         f"{1e3 * med(plain_t):.0f}", f"{med(ratio_plain):.3f}", spread(ratio_plain), "<= 1.05"],
        [f"range test vs Tuner.lr_find ({steps} steps)", f"{1e3 * med(ours_t):.0f}",
         f"{1e3 * med(lightning_t):.0f}", f"{med(ratio_lightning):.3f}", spread(ratio_lightning), ""],
    ]
    disk = {side: (max(v) if v else float("nan")) for side, v in written.items()}
    disk.update({f"{side} left": v for side, v in left.items()})
    return rows, disk


class _StopAfterFitStart(L.Callback):
    """Ends ``fit`` right after ``on_fit_start``: no training epoch runs."""

    def on_fit_start(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the model's parameters and buffers plus every tensor in the optimizer's state."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def snapshot_sizes(dm, root: str) -> list[list[str]]:
    """The snapshot the range test takes, after one epoch of training (optimizer state filled)."""
    rows = []
    for key in ("cnn-sgd", "mlp-adamw"):
        task = TASKS[key]
        L.seed_everything(0, verbose=False)
        model = task.model()
        t = trainer(1, root)
        t.fit(model, datamodule=dm)  # one epoch: momentum / Adam moments now exist
        optimizer = t.optimizers[0]
        snap = TrainingState.take(model, [optimizer])
        size, ref = snap.nbytes(), state_bytes(model, optimizer)
        rows.append([task.name, f"{ref:,}", f"{size:,}", f"{size / ref:.3f}"])
    return rows


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=15, help="A/B pairs per comparison (default 15)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per step-time run (default 3)")
    p.add_argument("--num-samples", type=int, default=5000, help="MNIST-1D samples, 80%% train (default 5000)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Print the three tables; returns their rows."""
    args = parse(argv)
    if args.epochs < 2:
        raise SystemExit(f"--epochs must be >= 2 (steps are timed after the first epoch), got {args.epochs}")
    setup()
    start = time.time()
    dm = mnist1d(args.num_samples)
    root = tempfile.mkdtemp(prefix="lightning_clr_speed_")
    print(f"# Speed benchmark\n\n{time.strftime('%Y-%m-%d')}, {machine()}; 1-D CNN + SGD, MNIST-1D, batch "
          f"{dm.batch_size} ({steps_per_epoch(dm)} steps per epoch); ratios: median and interquartile range "
          f"over {args.pairs} alternating pairs\n", flush=True)

    steps, step_ms = step_times(dm, args.epochs, args.pairs, root)
    print("## Step time after the range test\n")
    print(markdown(["comparison", "ours ms/step", "theirs ms/step", "ratio", "ratio IQR", "target"], steps) + "\n",
          flush=True)
    costs = scheduler_costs(steps_per_epoch(dm), step_ms)
    print("The only per-step work that differs, `scheduler.step()` (fastest of 7 x 2000 calls):\n")
    print(markdown(["comparison", "ours µs", "theirs µs", "difference µs", "difference / step"], costs) + "\n",
          flush=True)

    tests, disk = range_tests(dm, args.pairs, args.epochs)
    print("## Range-test wall time\n")
    print(markdown(["comparison", "ours ms", "theirs ms", "ratio", "ratio IQR", "target"], tests) + "\n",
          flush=True)

    sizes = snapshot_sizes(dm, root)
    print("## Disk and memory\n")
    print(markdown(["range test", "bytes written (max over runs)", "bytes left in the folder afterwards"], [
        ["LRRangeTest", f"{disk['ours']:,.0f}", f"{disk['ours left']:,}"],
        ["Tuner.lr_find", f"{disk['lightning']:,.0f}", f"{disk['lightning left']:,}"],
    ]) + "\n")
    print(markdown(["model + optimizer", "params + buffers + optimizer state (bytes)", "snapshot (bytes)",
                    "snapshot / state"], sizes) + "\n")
    print(f"Total: {time.time() - start:.0f} s", flush=True)
    return {"steps": steps, "scheduler": costs, "range_tests": tests, "disk": disk, "snapshot": sizes}


if __name__ == "__main__":
    main(sys.argv[1:])
