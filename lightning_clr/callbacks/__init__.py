"""Callbacks that work beside the range test: snapshot ensembles, the flatness probe, the gap logger."""

from lightning_clr.callbacks.ensemble import EnsembleModel, SnapshotEnsemble, SnapshotFileError, load_ensemble
from lightning_clr.callbacks.flatness import FlatnessProbe, measure_flatness
from lightning_clr.callbacks.gap import GeneralizationGap

__all__ = ["EnsembleModel", "FlatnessProbe", "GeneralizationGap", "SnapshotEnsemble", "SnapshotFileError",
           "load_ensemble", "measure_flatness"]
