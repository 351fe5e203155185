"""lightning-clr: LR range test and cyclical learning rates for PyTorch Lightning."""

from lightning_clr import schedules, selection
from lightning_clr.logging import GeneralizationGap, plot_range_test
from lightning_clr.range_test import LRRangeTest, RangeTestError, RangeTestResult

__version__ = "0.1.0"

__all__ = [
    "GeneralizationGap",
    "LRRangeTest",
    "RangeTestError",
    "RangeTestResult",
    "plot_range_test",
    "schedules",
    "selection",
]
