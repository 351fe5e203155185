"""The Hydra entry point and what only it needs.

- :mod:`.main`: ``python -m lightning_clr.run``: compose, pre-flight, instantiate, fit, report;
- :mod:`.config`: config schemas and one-line config errors;
- :mod:`.preflight`: checks before anything trains (writable folders, the checkpoint to resume);
- :mod:`.rundir`: one job per run folder;
- :mod:`.checkpointing`, :mod:`.faults`: checkpoints that survive kills, runs that stop on one line;
- :mod:`.grid_check`, :mod:`.compare`: the range test checked against a grid, runs side by side
  (``python -m lightning_clr.cli.compare``); :mod:`.events`, :mod:`.recorded`, :mod:`.runs`,
  :mod:`.table`, :mod:`.sweep_checks`: what :mod:`.compare` reads and prints;
- :mod:`.extras`: which optional extra a missing Hydra plugin comes from.

The library (``range_test``, ``selection``, ``schedules``, ``callbacks``) never imports from here.
"""
