"""Schedule specs: LR schedule shapes that become torch ``LRScheduler`` objects once the
range test has found ``base_lr`` and ``max_lr``.

Each spec is a small, Hydra-instantiable dataclass of shape parameters. Its
``build(optimizer, base_lr, max_lr, *, steps_per_epoch, total_steps)`` returns a
scheduler stepped once per optimizer step, and ``cycle_ends(...)`` the step counts at
which a cycle ends (for snapshot ensembles).

- :class:`Triangular`, :class:`Triangular2`, :class:`ExpRange`: cyclical learning rates,
  Smith 2017, arXiv 1506.01186 (torch's ``CyclicLR``).
- :class:`SGDR`: cosine annealing with warm restarts, Loshchilov & Hutter, arXiv 1608.03983,
  with fractional ``cycle_mult``, peak decay and warmup.
- :class:`OneCycle`: 1cycle, Smith & Topin arXiv 1708.07120 and Smith arXiv 1803.09820
  (torch's ``OneCycleLR``).
- :class:`WSD`: warmup-stable-decay, Hägele et al., arXiv 2405.18392.
- :class:`StepDecay`, :class:`ExponentialDecay`, :class:`Cosine`: classic annealings from
  ``max_lr`` toward ``base_lr``; :class:`Constant`: the fixed-LR baseline.

The base class :class:`Schedule` does the param-group work once (per-group bounds, stale
optimizer state, momentum checks, a ``state_dict`` of plain numbers); each spec gives its
lengths in steps and its LR as a pure function of the step count (``sgdr_lr``, ``wsd_lr``,
...), or torch's own scheduler where torch computes the schedule exactly.

Example::

    import torch
    from lightning_clr import schedules

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    spec = schedules.SGDR(cycle_epochs=1, cycle_mult=2)
    scheduler = spec.build(optimizer, 1e-3, 0.1, steps_per_epoch=100, total_steps=700)
    spec.cycle_ends(steps_per_epoch=100, total_steps=700)  # [100, 300, 700]
"""

from lightning_clr.schedules.annealing import (
    Constant,
    Cosine,
    ExponentialDecay,
    StepDecay,
    constant_lr,
    cosine_lr,
    step_decay_lr,
)
from lightning_clr.schedules.base import ClosedFormLR, Schedule
from lightning_clr.schedules.cyclic import ExpRange, Triangular, Triangular2
from lightning_clr.schedules.one_cycle import OneCycle
from lightning_clr.schedules.sgdr import SGDR, sgdr_lr
from lightning_clr.schedules.wsd import WSD, wsd_lr

SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "triangular": Triangular,
    "triangular2": Triangular2,
    "exp_range": ExpRange,
    "sgdr": SGDR,
    "one_cycle": OneCycle,
    "step": StepDecay,
    "exp_decay": ExponentialDecay,
    "cosine": Cosine,
    "wsd": WSD,
}

__all__ = [
    "SCHEDULES",
    "SGDR",
    "WSD",
    "ClosedFormLR",
    "Constant",
    "Cosine",
    "ExpRange",
    "ExponentialDecay",
    "OneCycle",
    "Schedule",
    "StepDecay",
    "Triangular",
    "Triangular2",
    "constant_lr",
    "cosine_lr",
    "sgdr_lr",
    "step_decay_lr",
    "wsd_lr",
]
