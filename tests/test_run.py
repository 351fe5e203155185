"""The real entry point: Hydra CLI, printed summary, TensorBoard files and server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import SMALL
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # the CLI, in-process and in subprocesses, and a TensorBoard server

SCALARS = {
    "lr", "lr-momentum",                                      # LearningRateMonitor, per step
    "train/loss_step", "train/loss_epoch", "train/acc",       # training
    "val/loss", "val/acc",                                    # validation
    "gap/loss", "gap/acc",                                    # validation minus training
    "range_test/lr", "range_test/loss", "range_test/loss_raw",  # the sweep
}


def _event_dirs(out: Path) -> list[Path]:
    return sorted({p.parent for p in out.rglob("events.out.tfevents.*")})


def test_tensorboard_files_hold_every_tag(sgdr_run):
    out, metrics = sgdr_run
    (log_dir,) = _event_dirs(out)
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert SCALARS <= set(tags["scalars"]), SCALARS - set(tags["scalars"])
    assert "range_test/curve" in tags["images"]
    assert (log_dir / "range_test.png").stat().st_size > 1000
    points = len(acc.Scalars("range_test/loss"))
    assert points == len(acc.Scalars("range_test/lr")) >= 20
    lrs = [e.value for e in acc.Scalars("lr")]
    assert len(lrs) >= 3 and max(lrs) > min(lrs)  # SGDR moves the LR
    gap = acc.Scalars("gap/loss")[-1].value
    assert gap == pytest.approx(metrics["val/loss"] - metrics["train/loss_epoch"], abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_the_scalars(sgdr_run):
    out, _ = sgdr_run
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(out), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        found: set[str] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not SCALARS <= found:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    runs = json.load(r)
            except OSError:
                continue
            found = {tag for tags in runs.values() for tag in tags}
        assert SCALARS <= found, SCALARS - found
    finally:
        server.terminate()
        server.wait(timeout=30)




@pytest.mark.parametrize("schedule", [[], ["+schedule=sgdr"]], ids=["constant", "sgdr"])
def test_cli_runs_outside_the_source_tree(schedule, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*SMALL, "trainer.max_epochs=1", *schedule, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bounds: base_lr=" in proc.stdout
    line = next(l for l in proc.stdout.splitlines() if l.startswith("TensorBoard: tensorboard --logdir "))
    log_dir = Path(line.split("--logdir ", 1)[1])
    assert log_dir.is_dir() and log_dir.is_relative_to(run_dir)
    assert _event_dirs(run_dir) == [log_dir]
    assert (run_dir / ".hydra" / "config.yaml").exists()
