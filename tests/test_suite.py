"""benchmarks/suite.py and its tasks.

The smoke test runs the whole pipeline on a tiny budget and checks that it prints every table:
two tasks from two families (so leave-one-family-out has two folds), one seed, one epoch, a
one-point-per-decade grid, short recorded sweeps, a handful of candidates and three schedules,
in one process; the anchors go to a temporary cache, never the committed one. The other tests
check the pieces the suite's new rows rest on, in process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import BENCHMARKS, benchmark_modules

pytest.importorskip("torch_lr_finder")
pytest.importorskip("schedulefree")
pytest.importorskip("prodigyopt")
pytest.importorskip("lion_pytorch")

SCRIPT = BENCHMARKS / "suite.py"
TASKS = ("mlp-mnist1d", "short-digits")
TRAINING_STEPS = {"mlp-mnist1d": 75, "short-digits": 22}  # one epoch: 2400 // 32 and 1438 // 64


@pytest.fixture(scope="module")
def st():
    return benchmark_modules("suite_tasks")[0]


def section(out: str, title: str) -> str:
    return out[out.index(title):].split("\n## ")[0]


def cells(block: str, first: str) -> list[str]:
    """The cells of the table row whose first cell starts with ``first``."""
    line = next(line for line in block.splitlines() if line.startswith(f"| {first}"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_suite_prints_every_row_target_and_the_study(tmp_path):
    cache = tmp_path / "anchors.json"
    args = [sys.executable, str(SCRIPT), "--tasks", *TASKS, "--seeds", "0", "--epochs", "1", "--grid-per-decade", "1",
            "--max-widen", "0", "--record-steps", "60", "30", "--small-study", "--schedules", "Constant", "WSD",
            "WSD(decay=0.1)", "--workers", "1", "--refresh-anchors", "--anchors", str(cache),
            "--json", str(tmp_path / "out.json")]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for name in TASKS:
        block = section(out, f"## {name} ")
        for row in ("oracle (grid search)", "lightning lr_find", "torch-lr-finder", "schedule-free AdamW",
                    "prodigy + cosine", "ours + Constant", "ours + WSD", "ours + WSD(decay=0.1)"):
            assert len(cells(block, row)) == 6, (name, row)
        assert cells(block, "schedule-free AdamW")[1] == "0.0025"
        assert cells(block, "prodigy + cosine")[1].startswith("d = ")
        bare = cells(block, "LRRangeTest() (")
        ratio, sweep, training = re.fullmatch(r"([\d.e+-]+) \((\d+) / (\d+)\)", bare[5]).groups()
        assert int(training) == TRAINING_STEPS[name] and int(sweep) >= 1
        assert float(ratio) == pytest.approx(int(sweep) / int(training), rel=0.05)
        for target in ("best of ours", "default schedule (held-out choice", "max_lr (held-out defaults"):
            assert any(line.startswith(("- PASS " + target, "- MISS " + target)) for line in block.splitlines())
        assert re.search(r"^- (PASS|MISS) default schedule .* beats schedule-free AdamW \(.*\), prodigy \+ cosine",
                         block, re.MULTILINE)
        assert f"| {name} |" in out[out.index("## Summary"):]
    assert "## Defaults study (leave-one-family-out)" in out and "| mean |" in out
    assert "Default schedule chosen on all families:" in out
    shapes = section(out, "## Shapes")  # a schedule with two trained variants gets its shape chosen
    assert "| WSD | WSD(decay=0.1) |" in shapes and "Shape chosen on all families: WSD:" in shapes
    for title, name, values in (("## Shallow-sweep reruns", "min_fall", ("0", "0.05", "0.1", "0.2", "0.3")),
                                ("## Sweep length", "sweep_share", ("none", "1", "0.5", "0.25"))):
        block = section(out, title)
        for v in values:
            assert len(cells(block, v + " ")) == 6, (name, v)
        assert f"{name} chosen on all families:" in block
    # short-digits' run is 22 steps: at a share of 0.25 or 0.5 its sweep is cut to the 20-point floor, not more
    assert float(cells(section(out, "## Sweep length"), "0.25 ")[4]) < float(cells(section(out, "## Sweep length"),
                                                                                   "none")[4])
    base = section(out, "## base_lr")
    for label in ("read off the curve", "max_lr / 4", "max_lr / 10", "max_lr / 25"):
        assert len(cells(base, label)) == 4 + 2  # median, mean, folds and one column per family
    assert "base_lr chosen on all families:" in base
    rivals = section(out, "## Against what users pick instead")
    for label in ("LRRangeTest() (as installed)", "ours, held-out defaults and schedule", "lightning lr_find",
                  "torch-lr-finder", "schedule-free AdamW", "prodigy + cosine"):
        assert len(cells(rivals, label)) == 4 + 2
    assert "beats schedule-free and prodigy" in out
    # the anchors, the alternatives' rows included, were cached under task, seed and epochs
    anchors = json.loads(cache.read_text())
    for name in TASKS:
        ent = anchors[f"{name}|seed=0|epochs=1|per_decade=1"]
        assert ent["schedule-free"]["lr"] == 0.0025 and ent["prodigy"]["lr"] > 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["chosen"]) >= {"start_lr", "end_lr", "num_steps", "ema_beta", "divergence_threshold", "rule",
                                     "rule_options"}
    assert report["default_schedule"] in ("Constant", "WSD", "WSD(decay=0.1)")
    assert report["shapes"]["WSD"] in ("WSD", "WSD(decay=0.1)")
    assert report["sweep_share"]["chosen"] in (None, 1.0, 0.5, 0.25) and report["min_fall"]["chosen"] in (
        0.0, 0.05, 0.1, 0.2, 0.3)
    assert report["base_lr"]["chosen"] in ("read off the curve", "max_lr / 4", "max_lr / 10", "max_lr / 25")
    assert set(report["tasks"]) == set(TASKS)
    for name, task in report["tasks"].items():
        assert len(task["targets"]) == 4 and set(task["alternatives"]) == {"schedule-free AdamW", "prodigy + cosine"}


def test_batch_norm_statistics_are_the_exact_average_over_the_batches(st):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).eval()
    batches = [torch.randn(8, 3) for _ in range(3)]
    rng = torch.get_rng_state()
    assert st.recompute_batch_norm(net, iter(batches)) == 3
    hidden = [net[0](b).detach() for b in batches]
    bn = net[1]
    assert torch.allclose(bn.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([h.var(0) for h in hidden]).mean(0), atol=1e-6)
    assert bn.momentum == 0.1 and not net.training  # its momentum and mode are given back
    assert torch.equal(torch.get_rng_state(), rng)
    assert st.recompute_batch_norm(torch.nn.Linear(3, 4), iter(batches)) == 0  # no BatchNorm, nothing forwarded


def test_alternatives_fit_their_warmup_and_annealing_to_the_run(st):
    task = st.TASKS["transformer-lm"]  # AdamW with weight decay 0.1
    total = 3 * task.steps_per_epoch
    sf = st.alternative_model(task, "schedule-free", 3).configure_optimizers()
    assert type(sf).__name__ == "AdamWScheduleFree"
    assert sf.param_groups[0]["lr"] == 0.0025 and sf.param_groups[0]["weight_decay"] == 0.1
    assert sf.param_groups[0]["warmup_steps"] == round(0.05 * total)
    prodigy = st.alternative_model(task, "prodigy", 3).configure_optimizers()
    assert type(prodigy["optimizer"]).__name__ == "Prodigy" and prodigy["optimizer"].param_groups[0]["lr"] == 1.0
    assert prodigy["lr_scheduler"]["scheduler"].T_max == total and prodigy["lr_scheduler"]["interval"] == "step"
    with pytest.raises(ValueError, match="'sgd' is not one of"):
        st.alternative_model(task, "sgd", 3)


def test_schedule_free_validates_at_x_with_batch_norm_statistics_recomputed_there(st, tmp_path):
    import copy

    task = st.TASKS["lion-digits"]  # conv + BatchNorm
    torch.manual_seed(0)
    model = st.alternative_model(task, "schedule-free", 1)
    x_train = st._arrays(task.data).x_train
    modes = st.ScheduleFreeModes(lambda: x_train.split(task.batch_size))
    t = st.trainer(1, tmp_path, [modes], limit_train_batches=5)
    t.fit(model, datamodule=task.datamodule())
    optimizer = t.optimizers[0]
    assert not optimizer.param_groups[0]["train_mode"]  # eval mode after fit: the parameters hold x
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    again = copy.deepcopy(model)
    st.recompute_batch_norm(again, iter(x_train.split(task.batch_size)))
    twin = next(m for m in again.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.allclose(bn.running_mean, twin.running_mean) and torch.allclose(bn.running_var, twin.running_var)
    # the recomputation's batches (every training sample once), not the training's 5
    assert int(bn.num_batches_tracked) == len(x_train.split(task.batch_size)) == 45


def test_sweep_steps_are_counted_apart_from_the_training(st, tmp_path):
    from lightning_clr import LRRangeTest

    task = st.TASKS["short-digits"]
    finder = LRRangeTest(num_steps=20, end_lr=1.0, min_fall=0.0, progress_bar=False)
    run = st.fit_run(task, 0, 1, tmp_path, finder=finder)
    assert run.training_steps == 22 and run.sweep_steps == len(finder.result.lrs) == 20


def test_new_families_build_offline(st):
    vit = st.ViT()
    assert vit.pos.shape == (1, 17, 32)  # 16 patches of 2x2 and the class token
    assert vit(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    rng = torch.get_rng_state()
    st.pretrained_features.cache_clear()
    first = st.pretrained_features()
    assert torch.equal(torch.get_rng_state(), rng)  # pre-training leaves the seeded run's RNG alone
    st.pretrained_features.cache_clear()
    assert all(torch.equal(first[k], v) for k, v in st.pretrained_features().items())  # the same in every process
    a, b = st.finetune_net(), st.finetune_net()
    assert torch.equal(a.features[0].weight, b.features[0].weight) and not torch.equal(a.head.weight, b.head.weight)
    families = {t.family for t in st.TASKS.values()}
    assert {"vision transformer", "fine-tuning", "Lion (sign updates)", "short run",
            "label smoothing + heavy wd"} <= families and len(families) == 14
    assert st.TASKS["short-digits"].steps_per_epoch * st.TASKS["short-digits"].epochs < 300
