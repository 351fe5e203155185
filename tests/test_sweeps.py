"""Sweeps from the command line, as a user runs them: the LR grid check, Optuna, submitit launchers, extras.

Every multirun here is the real CLI in a subprocess (``python -m lightning_clr.run -m ...``) on
``data=synthetic`` with one epoch and a 20-step range test; the numbers the tests expect are
read back from the runs' own TensorBoard files, not from the printed output.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_clr.cli.grid_check import grid_sweep, log_grid
from lightning_clr.cli.main import config_dir
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # Hydra multiruns and launchers through the CLI

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["data=synthetic", "trainer.max_epochs=1", "finder.num_steps=20", "trainer.enable_progress_bar=false"]


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli(args, cwd, **(env or {}))


def _final(log_dir: Path, tag: str) -> float:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return float(events.Scalars(tag)[-1].value)


def _job(sweep: Path, num: int) -> tuple[Path, dict, list[str]]:
    """A job's TensorBoard folder, its saved config and its overrides."""
    (log_dir,) = {p.parent for p in (sweep / str(num)).rglob("events.out.tfevents.*")}
    hydra = sweep / str(num) / ".hydra"
    read = lambda name: yaml.safe_load((hydra / name).read_text())
    return log_dir, read("config.yaml"), read("overrides.yaml")


def _assert_png(path: Path, shape: tuple[int, int]) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[:2] == shape


class TestGridValues:
    def test_log_grid_includes_both_ends(self):
        assert log_grid(1e-3, 1.0, 4) == [0.001, 0.01, 0.1, 1.0]
        grid = log_grid(1e-4, 1.0, 9)
        assert grid[0] == 1e-4 and grid[-1] == 1.0 and grid[4] == pytest.approx(0.01)
        ratios = [b / a for a, b in itertools.pairwise(grid)]
        assert ratios == pytest.approx([10**0.5] * 8, rel=1e-3)  # even in log LR

    def test_sweep_choices_end_with_the_range_test(self):
        assert grid_sweep(0.01, 1.0, 3) == "[0.01,0.01],[0.1,0.1],[1.0,1.0],null"

    @pytest.mark.parametrize("args,word", [((0.1, 0.01, 3), "start_lr"), ((0, 1, 3), "start_lr"),
                                           ((1e-3, 1, 1), "num_points"), ((1e-3, 1, 2.5), "num_points")])
    def test_bad_grid_is_one_line(self, args, word):
        with pytest.raises(ValueError, match=word) as err:
            log_grid(*args)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_lr_grid_check_on_synthetic_data(tmp_path):
    """Three constant LRs and one range-test run with SGDR: [lr, lr] is lr held constant, even for SGDR."""
    sweep = tmp_path / "grid"
    proc = _cli(["-m", "+sweep=lr_grid", "grid.start_lr=1e-3", "grid.end_lr=1", "grid.num_points=3", "+schedule=sgdr",
                 *TINY, "trainer.log_every_n_steps=1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # three constant-LR jobs and the range-test job, each with the overrides the grid asked for
    lrs = log_grid(1e-3, 1, 3)
    assert lrs == [0.001, 0.03162, 1.0]
    for num, lr in enumerate(lrs):
        log_dir, config, overrides = _job(sweep, num)
        assert f"finder.bounds=[{lr!r},{lr!r}]" in overrides and config["finder"]["bounds"] == [lr, lr]
        assert config["schedule"]["_target_"] == "lightning_clr.schedules.SGDR"
        row = re.search(rf"^\| {re.escape(f'{lr:.4g}')} \| ([0-9.]+) \|", out, re.MULTILINE)
        assert row is not None, out
        assert float(row.group(1)) == pytest.approx(_final(log_dir, "val/acc"), abs=6e-5)
        events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        events.Reload()
        assert {round(e.value, 9) for e in events.Scalars("lr")} == {round(lr, 9)}  # a constant LR
        assert "range_test/lr" not in events.Tags()["scalars"]  # bounds given: no range test
    log_dir, config, overrides = _job(sweep, 3)
    assert "finder.bounds=null" in overrides
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    base, top = hparams["range_test/base_lr"], hparams["range_test/max_lr"]
    assert f"range test base_lr={base:.4g}: " in out and f"range test max_lr={top:.4g}: " in out
    assert f"| {base:.4g} | " in out and "| range test base_lr |" in out and "| range test max_lr |" in out
    best = max(lrs, key=lambda lr: _final(_job(sweep, lrs.index(lr))[0], "val/acc"))
    assert f"best grid LR: {best:.4g} " in out
    assert f"range-test run (SGDR between the bounds): val/acc {_final(log_dir, 'val/acc'):.4f}" in out
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    lrs_run = [e.value for e in events.Scalars("lr")]  # SGDR between the found bounds, not constant
    assert len(lrs_run) == 16 and max(lrs_run) == pytest.approx(top, rel=1e-6)  # every step; SGDR starts at max_lr
    assert base * (1 - 1e-6) <= min(lrs_run) < 0.9 * top
    assert "did not train a constant LR" not in out
    # one figure: the grid check (8 x 7 in at 100 dpi), no comparison figure
    _assert_png(sweep / "lr_grid.png", (700, 800))
    assert not (sweep / "compare.png").exists()


@pytest.mark.slow
def test_lr_grid_on_a_users_own_model(tmp_path):
    """A user's module and data (tests/userpkg, which knows nothing of lightning_clr) logging ``val_loss``:
    the check reads that tag, lower is better; a tag no run logged is named with the ones they did."""
    userpkg = Path(__file__).resolve().parent / "userpkg"
    sweep = tmp_path / "grid"
    users = ["~data", "+data._target_=mypkg.BlobsDataModule", "+data.num_classes=3",
             "~model", "+model._target_=mypkg.LitClassifier", "+model.num_classes=${data.num_classes}"]
    proc = _cli(["-m", "+sweep=lr_grid", "grid.num_points=2", "grid.metric=val_loss", "trainer.max_epochs=1",
                 "finder.num_steps=20", "trainer.enable_progress_bar=false", *users, f"hydra.sweep.dir={sweep}"],
                tmp_path,
                env={"PYTHONPATH": os.pathsep.join(filter(None, [str(userpkg), os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = {lr: _final(_job(sweep, i)[0], "val_loss") for i, lr in enumerate(log_grid(1e-3, 1.0, 2))}
    best = min(losses, key=losses.get)
    assert f"best grid LR: {best:.4g} (val_loss {losses[best]:.4f})" in proc.stdout
    log_dir = _job(sweep, 2)[0]
    assert f"range-test run (WSD between the bounds): val_loss {_final(log_dir, 'val_loss'):.4f}" in proc.stdout
    assert "a schedule, while every grid run trains a constant LR: the comparison mixes a schedule against constants" \
        in proc.stdout  # without +schedule the range-test run trains the default WSD, and says so
    _assert_png(sweep / "lr_grid.png", (700, 800))
    from lightning_clr.cli.compare import compare

    with pytest.raises(ValueError, match=r"metric=val/acc: no grid run logged it; choose one of .*val_acc"):
        compare([sweep], png=None)


@pytest.mark.slow
def test_submitit_local_runs_each_schedule_in_its_own_process(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster extra: "
                        'pip install "lightning-clr[cluster]"')
    sweep = tmp_path / "sub"
    cmd = ["-m", "hydra/launcher=submitit_local", "+schedule=constant,sgdr", *TINY, f"hydra.sweep.dir={sweep}",
           "+hydra.callbacks.compare._target_=lightning_clr.cli.compare.CompareRuns"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "lightning_clr.run", *cmd], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    # submitit's local executor names each job's folder after the process it started
    jobs = sorted(p for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
    assert len(jobs) == 2 and len({p.name for p in jobs}) == 2 and str(proc.pid) not in {p.name for p in jobs}
    logs = [next(job.glob("*_0_log.out")).read_text() for job in jobs]
    assert all("final: val/acc=" in log for log in logs)
    schedules = {_job(sweep, n)[1].get("schedule", {}).get("_target_") for n in (0, 1)}
    assert schedules == {"lightning_clr.schedules.Constant", "lightning_clr.schedules.SGDR"}
    for num, name in ((0, "constant"), (1, "sgdr")):
        acc = _final(_job(sweep, num)[0], "val/acc")
        assert re.search(rf"^\| \+schedule={name} \| {'Constant' if num == 0 else 'SGDR'} \| .* \| {acc:.4f} \|",
                         out, re.MULTILINE), out


@pytest.mark.slow
def test_optuna_search_against_one_range_test(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the optuna extra: "
                        'pip install "lightning-clr[optuna]"')
    sweep = tmp_path / "opt"
    proc = _cli(["-m", "+sweep=optuna_lr", "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    finals = [_final(_job(sweep, n)[0], "val/acc") for n in range(2)]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(finals))
    # trial 0 is the reference range test: no drawn bounds, so the finder ran
    log_dir, _config, overrides = _job(sweep, 0)
    assert not any(o.startswith(("search.", "finder.rule")) for o in overrides)
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert (f"one range test: base_lr={hparams['range_test/base_lr']:.4g} max_lr={hparams['range_test/max_lr']:.4g}, "
            f"val/acc {finals[0]:.4f}") in proc.stdout
    assert f"search check: best of 2 trials: val/acc {max(finals):.4f}" in proc.stdout
    # trial 1 draws where its bounds come from, and then the rule or the bounds
    overrides = _job(sweep, 1)[2]
    source = next(o.split("=", 1)[1] for o in overrides if o.startswith("search.bounds_from="))
    drawn = {o.split("=", 1)[0] for o in overrides}
    assert drawn >= ({"finder.rule"} if source == "range_test" else {"search.base_lr", "search.max_lr"})
    _assert_png(sweep / "search.png", (450, 1200))


def test_optuna_bounds_follow_the_drawn_source():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='needs pip install "lightning-clr[optuna]"')
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        ranged = compose("config", overrides=["+sweep=optuna_lr"])
        explicit = compose("config", overrides=["+sweep=optuna_lr", "search.bounds_from=explicit",
                                                "search.base_lr=0.01", "search.max_lr=0.2"])
    assert ranged.finder.bounds is None
    assert OmegaConf.to_container(explicit.finder, resolve=True)["bounds"] == [0.01, 0.2]


def test_slurm_launcher_follows_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs pip install "lightning-clr[cluster]"')
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
            "hydra.launcher.partition=gpu", "hydra.launcher.account=proj", "hydra.launcher.timeout_min=30"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert (launcher["partition"], launcher["account"], launcher["timeout_min"]) == ("gpu", "proj", 30)


@pytest.fixture
def without_plugins(tmp_path) -> dict[str, str]:
    """An environment in which no Hydra plugin is installed, as after ``pip install -e .`` alone.

    A regular package ``hydra_plugins`` first on the path hides the namespace package that
    the extras install into, so Hydra finds none of their configs.
    """
    hide = tmp_path / "no_plugins" / "hydra_plugins"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("")
    return {"PYTHONPATH": os.pathsep.join([str(hide.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.mark.parametrize("override,line", [
    ("+sweep=optuna_lr",
     ("error: hydra/sweeper=optuna needs the optional extra 'optuna' (hydra-optuna-sweeper): "
     'pip install "lightning-clr[optuna]"')),
    ("hydra/launcher=slurm",
     ("error: hydra/launcher=submitit_slurm needs the optional extra 'cluster' (hydra-submitit-launcher): "
     'pip install "lightning-clr[cluster]"')),
    ("hydra/launcher=submitit_local",
     ("error: hydra/launcher=submitit_local needs the optional extra 'cluster' (hydra-submitit-launcher): "
     'pip install "lightning-clr[cluster]"')),
])
@pytest.mark.slow
def test_missing_extra_is_one_line(tmp_path, without_plugins, override, line):
    proc = _cli(["-m", override, *TINY], tmp_path, env=without_plugins)
    assert proc.returncode == 2
    assert proc.stderr.strip() == line
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_grid_check_needs_no_extra(tmp_path, without_plugins):
    """Without any plugin, ``+sweep=lr_grid`` still composes: the basic sweeper is Hydra's own."""
    proc = _cli(["--cfg", "hydra", "--package", "hydra.sweeper", "+sweep=lr_grid", *TINY], tmp_path,
                env=without_plugins)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper" in proc.stdout
    assert "finder.bounds: ${clr.lr_grid:${grid.start_lr},${grid.end_lr},${grid.num_points}}" in proc.stdout
