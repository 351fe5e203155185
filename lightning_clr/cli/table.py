"""The comparison table: one row per run, written as GitHub Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_clr.cli.runs import Run


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
UNFINISHED = " (unfinished)"


def format_table(rows: Sequence[dict[str, Any]], target: float) -> str:
    """A Markdown table of :func:`summarize` rows."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"
    has_ensemble = any(r["ensemble"] is not None for r in rows)
    head = ["run", "schedule", "base_lr", "max_lr", "best val/acc (epoch)", "final val/acc",
            f"epochs to {target:g}"] + (["best ensemble/val_acc"] if has_ensemble else [])
    table = []
    for r in rows:
        cells = [r["run"], r["schedule"], fmt(r["base_lr"]), fmt(r["max_lr"]),
                 f"{r['best']:.4f} ({r['best_epoch']})", f"{r['final']:.4f}{UNFINISHED * r.get('unfinished', False)}",
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
