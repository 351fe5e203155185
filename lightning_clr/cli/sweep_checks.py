"""The grid and search checks of compared runs: which runs form the grid, which is the reference range test.

:mod:`lightning_clr.cli.grid_check` works on plain numbers; here the runs read back by
:func:`lightning_clr.cli.runs.load_run` become those numbers, and the checks become the lines
printed under the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from lightning_clr.cli.grid_check import GridCheck, SearchCheck
from lightning_clr.cli.recorded import read_yaml
from lightning_clr.cli.runs import CURVE_TAGS, Run
from lightning_clr.cli.table import UNFINISHED, markdown


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


def not_constant(runs: Sequence[Run]) -> list[str]:
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
    found = read_yaml(results) or {}
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
                     f"{check.range_value:.4f}{UNFINISHED * check.range_unfinished}, "
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
