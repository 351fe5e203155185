"""The LR range test: the callback and the engine under it.

The path of one range test, module by module:

- :mod:`.settings`: the callback's arguments, checked once (each bad value named with its fix);
- :mod:`.conditions`: what must hold inside ``fit`` before the first sweep step;
- :mod:`.restore`: an in-memory copy of everything a few training steps change;
- :mod:`.sweep`: real optimizer steps at rising LRs, the smoothed loss, divergence;
- :mod:`.readability`: whether a finished curve can be read, and what follows if not (within
  ``sweep_share`` of the run);
- :mod:`.lr_free`: Schedule-Free optimizers (train / eval modes, eval weights) and the refusal of
  those whose ``lr`` is a multiplier (Prodigy, D-Adaptation);
- :mod:`.result`: what the test measured and chose (:class:`RangeTestResult`);
- :mod:`.steps`, :mod:`.groups`, :mod:`.resume`: step counts, added param groups, resume policy;
- :mod:`.figure`: the curve with its bounds marked, to every logger;
- :mod:`.callback`: :class:`LRRangeTest`, which runs the above in ``on_fit_start`` and
  installs the schedule as ``LRSchedulerConfig(interval="step")``.
"""

from lightning_clr.range_test.callback import LRRangeTest
from lightning_clr.range_test.figure import log_range_test, plot_range_test
from lightning_clr.range_test.result import RangeTestError, RangeTestResult

__all__ = ["LRRangeTest", "RangeTestError", "RangeTestResult", "log_range_test", "plot_range_test"]
