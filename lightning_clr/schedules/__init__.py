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
- :class:`StepDecay`, :class:`ExponentialDecay`, :class:`Cosine`: classic annealings from
  ``max_lr`` toward ``base_lr``; :class:`Constant`: the fixed-LR baseline.

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
    CosineScheduler,
    ExponentialDecay,
    StepDecay,
    cosine_lr,
)
from lightning_clr.schedules.base import ClosedFormLR, Schedule
from lightning_clr.schedules.cyclic import ExpRange, Triangular, Triangular2
from lightning_clr.schedules.one_cycle import OneCycle
from lightning_clr.schedules.sgdr import SGDR, SGDRScheduler, sgdr_lr

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
}

__all__ = [
    "SCHEDULES",
    "SGDR",
    "ClosedFormLR",
    "Constant",
    "Cosine",
    "CosineScheduler",
    "ExpRange",
    "ExponentialDecay",
    "OneCycle",
    "SGDRScheduler",
    "Schedule",
    "StepDecay",
    "Triangular",
    "Triangular2",
    "cosine_lr",
    "sgdr_lr",
]
