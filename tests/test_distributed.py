"""The range test and the schedules on several processes, in mixed precision, with accumulation.

The DDP runs go through the real entry point, ``python -m lightning_clr.run trainer=ddp_cpu``
(2 CPU processes over gloo): Lightning starts the second process by running the same
command again, which is why they run in a subprocess and not inside pytest. Each rank
writes what it saw to ``rank<N>.json`` (:class:`tests.rank_recorder.RankRecorder`).

The 1-process reference has the same global batch (64 = 2 x 32) and runs with DDP on one
process: Lightning always reshuffles a training set under DDP with a ``DistributedSampler``
seeded by the run's seed, which deals one permutation to the ranks in turn, so rank ``r`` of
2 gets its elements ``r, r + 2, ...`` and the two ranks' k-th batches together hold the same
64 samples as the 1-process run's k-th batch.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import shlex
import subprocess
import sys
from itertools import product
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.plugins import MixedPrecision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_clr import LRRangeTest, schedules
from lightning_clr.cli.main import config_dir
from lightning_clr.range_test.sweep import sweep_lrs
from tests.helpers import tiny_data, tiny_model, tiny_trainer

ROOT = Path(__file__).resolve().parents[1]
NUM_TRAIN, GLOBAL_BATCH, ACCUMULATE, EPOCHS = 512, 64, 2, 2
PASS = NUM_TRAIN // GLOBAL_BATCH  # 8 batches per rank in one pass over the data (16 for 1 process at batch 32)
LIMIT = 6  # limit_train_batches: an epoch is 6 of them, 3 optimizer steps
MIN_LR, MAX_LR, NUM_STEPS = 1e-4, 10.0, 40
# one sweep step in log LR: bounds "within one sweep step" differ by at most this
LOG_STEP = math.log(MAX_LR / MIN_LR) / (NUM_STEPS - 1)
RUN = [
    "trainer=ddp_cpu", "data=synthetic", f"data.num_train={NUM_TRAIN}", "model=mlp", "model.head_lr_scale=10",
    "+schedule=sgdr", "schedule.cycle_epochs=1", "schedule.cycle_mult=1",
    f"trainer.max_epochs={EPOCHS}", f"trainer.accumulate_grad_batches={ACCUMULATE}",
    f"+trainer.limit_train_batches={LIMIT}",
    f"finder.num_steps={NUM_STEPS}", f"finder.start_lr={MIN_LR}", f"finder.end_lr={MAX_LR}",
    "trainer.enable_progress_bar=false", "+callbacks.record._target_=tests.rank_recorder.RankRecorder",
]


def launch(out: Path, devices: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    overrides = [*RUN, *extra, f"trainer.devices={devices}", f"data.batch_size={GLOBAL_BATCH // devices}",
                 f"+callbacks.record.folder={out / 'ranks'}", f"hydra.run.dir={out / 'run'}"]
    # run from the checkout (python -m puts it on sys.path): every rank imports tests.rank_recorder
    return subprocess.Popen([sys.executable, "-m", "lightning_clr.run", *overrides], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def records(out: Path, proc: subprocess.Popen, devices: int) -> list[dict]:
    log, _ = proc.communicate()
    assert proc.returncode == 0, log[-4000:]
    return [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in range(devices)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two processes (batch 32 each) and one process (batch 64), started side by side."""
    outs = {n: tmp_path_factory.mktemp(f"ddp{n}") for n in (2, 1)}
    procs = {n: launch(outs[n], n) for n in (2, 1)}
    return {n: records(outs[n], procs[n], n) for n in (2, 1)} | {"out": outs[2]}


def lr_at_batches(record: dict) -> np.ndarray:
    return np.array([lrs for _, _, lrs in record["lrs"]])


@pytest.mark.slow  # 2-process DDP on CPU (gloo)
class TestDDP:
    def test_every_rank_has_the_same_curve_bounds_and_lrs(self, runs):
        rank0, rank1 = runs[2]
        assert (rank0["rank"], rank1["rank"], rank0["world_size"]) == (0, 1, 2)
        assert rank0["result"] == rank1["result"]  # curve, bounds, stop reason, ratios: exactly equal
        assert rank0["lrs"] == rank1["lrs"]  # the LR of both groups at every training batch
        assert len(rank0["lrs"]) == EPOCHS * LIMIT

    def test_loss_is_the_mean_over_ranks_and_bounds_match_one_process(self, runs):
        two, one = runs[2][0]["result"], runs[1][0]["result"]
        # the same 64 samples per micro-batch: equal losses up to float rounding while the curve is smooth
        np.testing.assert_allclose(two["raw_losses"][:20], one["raw_losses"][:20], rtol=1e-4)
        for key in ("base_lr", "max_lr"):
            assert abs(math.log(two[key] / one[key])) <= LOG_STEP + 1e-9, (key, two[key], one[key])
        assert abs(len(two["lrs"]) - len(one["lrs"])) <= 1  # the stop, too, within one sweep step

    def test_steps_per_epoch_are_per_rank(self, runs):
        for record in runs[2]:
            # after the sampler (8 batches per rank, not 16), the limit (6) and accumulation (2 per step)
            assert record["num_training_batches"] == LIMIT
            assert record["steps_per_epoch"] == LIMIT // ACCUMULATE == 3
            assert record["total_steps"] == EPOCHS * 3
        assert runs[1][0]["steps_per_epoch"] == 3  # same global batch: same steps on 1 process

    def test_sgdr_restarts_on_the_first_step_of_each_epoch_on_every_rank(self, runs):
        for record in runs[2]:
            r = record["result"]
            optimizer = torch.optim.SGD([{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)]}], lr=1.0)
            spec = schedules.SGDR(cycle_epochs=1, cycle_mult=1)
            scheduler = spec.build(optimizer, [r["base_lr"], 10 * r["base_lr"]], [r["max_lr"], 10 * r["max_lr"]],
                                   steps_per_epoch=3, total_steps=6)
            expected = []
            for _ in range(EPOCHS * 3):
                expected += [[g["lr"] for g in optimizer.param_groups]] * ACCUMULATE  # one LR per optimizer step
                optimizer.step()
                scheduler.step()
            got = lr_at_batches(record)
            np.testing.assert_allclose(got, expected, rtol=1e-12)
            np.testing.assert_allclose(got[:, 1] / got[:, 0], 10.0, rtol=1e-12)  # the groups' ratio at every step
            assert r["group_ratios"] == pytest.approx([1.0, 10.0])
            epochs, batches = zip(*((e, b) for e, b, _ in record["lrs"]))
            restart = epochs.index(1)
            peak = r["base_lr"] + (r["max_lr"] - r["base_lr"]) * spec.cycle_decay  # the second cycle's peak
            assert batches[restart] == 0 and got[restart, 0] == pytest.approx(peak, rel=1e-12)
            assert got[restart - 1, 0] < got[restart, 0]  # annealed before, back at the (decayed) peak now

    def test_one_point_per_optimizer_step(self, runs):
        for record in runs[2]:
            r = record["result"]
            assert r["skipped_steps"] == 0
            assert len(record["sweep_batches"]) == ACCUMULATE * len(r["lrs"])
            assert len(record["fit_batches"]) == EPOCHS * LIMIT
            assert r["lrs"] == sweep_lrs(MIN_LR, MAX_LR, NUM_STEPS, "exponential")[: len(r["lrs"])]

    def test_sweep_passes_deal_the_data_as_the_epochs_do(self, runs):
        for record in runs[2]:
            sweep, fit = record["sweep_batches"], record["fit_batches"]
            assert len(sweep) >= 2 * PASS  # whole passes over the data (the sweep ignores the limit)
            # pass p of the sweep sees epoch p's batches: reshuffled each pass, in the same order as training
            assert sweep[:LIMIT] == fit[:LIMIT]
            assert sweep[PASS:PASS + LIMIT] == fit[LIMIT:]
            assert sweep[:PASS] != sweep[PASS:2 * PASS]
        assert runs[2][0]["sweep_batches"] != runs[2][1]["sweep_batches"]  # each rank has its own share

    def test_a_shallow_sweep_is_rerun_on_every_rank(self, tmp_path):
        # min_fall 0.99 calls any curve shallow: one rerun with twice the steps, decided by rank zero
        records_ = records(tmp_path, launch(tmp_path, 2, ("finder.min_fall=0.99", "finder.max_reruns=1")), 2)
        rank0, rank1 = (r["result"] for r in records_)
        assert rank0 == rank1 and rank0["reruns"] == 1
        assert rank0["lrs"] == sweep_lrs(MIN_LR, MAX_LR, 2 * NUM_STEPS, "exponential")[: len(rank0["lrs"])]
        assert len(rank0["lrs"]) > NUM_STEPS  # the rerun's curve, not the first sweep's

    def test_curve_logged_once_by_rank_zero(self, runs):
        files = sorted((runs["out"] / "run").rglob("events.out.tfevents.*"))
        assert len(files) == 1
        events = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0})
        events.Reload()
        curve = events.Scalars("range_test/loss")
        np.testing.assert_allclose([e.value for e in curve], runs[2][0]["result"]["losses"], rtol=1e-6)
        assert [e.step for e in curve] == list(range(len(curve)))
        assert len(list((runs["out"] / "run").rglob("range_test.png"))) == 1


class _InfGrad(torch.autograd.Function):
    """Identity forward; the gradient turns infinite (a finite loss whose gradients overflow)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


class TestMixedPrecision:
    def test_bf16_mixed_finds_finite_bounds(self, tmp_path):
        finder = LRRangeTest(num_steps=30, start_lr=1e-4, end_lr=10.0)
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=1, precision="bf16-mixed")
        trainer.fit(tiny_model(), datamodule=tiny_data())
        r = finder.result
        assert 10 < len(r.lrs) <= 30 and r.skipped_steps == 0
        assert all(math.isfinite(v) for v in r.losses)
        assert MIN_LR <= r.base_lr < r.max_lr <= r.lrs[-1]
        assert r.losses[0] > 1.0 > min(r.losses)  # 4 classes: starts near log(4), then learns

    def test_fp16_scaler_overflow_steps_are_not_points(self, tmp_path):
        """A real GradScaler; an inf gradient on two calls makes it skip two updates.

        On CPU ``Trainer(precision="16-mixed")`` falls back to bf16 without a scaler, so the
        16-mixed plugin and its scaler are passed explicitly.
        """
        calls = []

        class Overflowing(type(tiny_model())):
            def training_step(self, batch, batch_idx):
                calls.append(batch_idx)
                loss = super().training_step(batch, batch_idx)
                return _InfGrad.apply(loss) if len(calls) in (4, 9) else loss

        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
        finder = LRRangeTest(num_steps=20, start_lr=1e-4, end_lr=1e-2, max_extensions=0, min_fall=0.0)  # one sweep
        trainer = tiny_trainer(tmp_path, callbacks=[finder], max_steps=1, plugins=[precision])
        trainer.fit(Overflowing(tiny_model().net, num_classes=4), datamodule=tiny_data())
        r = finder.result
        assert r.skipped_steps == 2 and r.stop_reason == "completed"
        assert len(calls) == 20 + 2 + 1  # every LR of the sweep once, two retries, then the real step
        assert r.lrs == sweep_lrs(1e-4, 1e-2, 20, "exponential")  # each LR recorded once, in order
        assert all(math.isfinite(v) for v in r.raw_losses)
        assert scaler.get_scale() == 1024.0  # restored after the sweep (it backed off twice during it)


# ---------------------------------------------------------------------- README and configs


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def readme_commands() -> list[tuple[str, list[str], dict[str, str], list[str]]]:
    """``(line, launcher words, #SBATCH options, overrides)`` for every ``lightning_clr.run`` command
    in the README's multi-node section (continued lines joined, ``$SLURM_JOB_ID`` filled in)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Multi-GPU and multi-node", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    commands = []
    for block in blocks:
        block = block.replace("\\\n", " ")
        sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", block, flags=re.MULTILINE))
        for line in block.splitlines():
            if "lightning_clr.run" not in line or line.lstrip().startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            head, tail = words[: words.index("lightning_clr.run")], words[words.index("lightning_clr.run") + 1:]
            overrides = [w.replace("$SLURM_JOB_ID", "1234") for w in tail if w not in ("-m", "--multirun")]
            commands.append((line.strip(), head, sbatch, overrides))
    return commands


def test_trainer_configs_compose_to_trainer_arguments():
    arguments = set(inspect.signature(L.Trainer.__init__).parameters)
    for name, expected in {"ddp": ("auto", "ddp", "auto", 1), "ddp_cpu": ("cpu", "ddp", 2, 1)}.items():
        trainer = _compose([f"trainer={name}"]).trainer
        assert (trainer.accelerator, trainer.strategy, trainer.devices, trainer.num_nodes) == expected
        assert set(trainer) - {"_target_"} <= arguments  # every key is a Trainer argument


def test_readme_multinode_examples_compose():
    commands = readme_commands()
    launchers = {"python": 0, "torchrun": 0, "srun": 0}
    for line, head, sbatch, overrides in commands:
        parsed = OverridesParser.create().parse_overrides(overrides)
        sweeps = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                  else [o.input_line] for o in parsed]
        for chosen in product(*sweeps):
            cfg = _compose(list(chosen))
            if "torchrun" in head:
                flags = dict(w.lstrip("-").split("=", 1) for w in head if w.startswith("--") and "=" in w)
                assert int(flags["nproc_per_node"]) == cfg.trainer.devices, line
                assert int(flags.get("nnodes", 1)) == cfg.trainer.num_nodes, line
            if "srun" in head:
                assert int(sbatch["ntasks-per-node"]) == cfg.trainer.devices, line
                assert int(sbatch["nodes"]) == cfg.trainer.num_nodes, line
                assert int(sbatch["gpus-per-node"]) == cfg.trainer.devices, line
        launchers[next(k for k in ("torchrun", "srun", "python") if any(k in w for w in head))] += 1
    assert all(launchers.values()), launchers  # one-node, torchrun and sbatch examples are all there
    assert any("+schedule=triangular2,sgdr,one_cycle" in overrides for *_, overrides in commands)
