"""Read a pair of learning-rate bounds ``(base_lr, max_lr)`` off an LR range-test curve.

An LR range test raises the learning rate once per mini-batch and records the (smoothed)
loss. Smith (2017), "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186,
section 3.3, reads two numbers off that curve: the LR where the loss starts to improve is a
lower bound, the LR where it stops improving (or turns ragged) an upper bound; when only
the upper bound is clear, the lower bound is a third or a quarter of it.

Two parts:

- :mod:`~lightning_clr.selection.curve`: :func:`prepare` validates the curve (equal
  lengths, LRs finite, positive, strictly increasing), keeps its finite prefix, smooths it
  with a Gaussian kernel in ``log10(lr)``, estimates the noise and finds the top and the
  minimum; a curve too short or too flat to read comes back with ``unreadable`` set.
- :mod:`~lightning_clr.selection.rules`: ``smith``, ``valley`` and ``steepest``, each a short
  reader of that one :class:`Curve` type, and :func:`select_bounds` to pick one by name.
"""

from lightning_clr.selection.curve import Curve, prepare, valid_prefix
from lightning_clr.selection.rules import RULES, Bounds, select_bounds, smith, steepest, valley

__all__ = ["RULES", "Bounds", "Curve", "prepare", "select_bounds", "smith", "steepest", "valid_prefix", "valley"]
