"""lightning-clr: LR range test and cyclical learning rates for PyTorch Lightning."""

from lightning_clr import schedules, selection
from lightning_clr.callbacks.ensemble import SnapshotEnsemble, SnapshotFileError, load_ensemble
from lightning_clr.callbacks.flatness import FlatnessProbe, measure_flatness
from lightning_clr.callbacks.gap import GeneralizationGap
from lightning_clr.range_test import LRRangeTest
from lightning_clr.range_test.figure import plot_range_test
from lightning_clr.range_test.result import RangeTestError, RangeTestResult

__version__ = "0.4.0"

__all__ = [
    "FlatnessProbe",
    "GeneralizationGap",
    "LRRangeTest",
    "RangeTestError",
    "RangeTestResult",
    "SnapshotEnsemble",
    "SnapshotFileError",
    "load_ensemble",
    "measure_flatness",
    "plot_range_test",
    "schedules",
    "selection",
]
