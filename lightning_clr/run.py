"""``python -m lightning_clr.run``: the command-line entry point (it lives in :mod:`lightning_clr.cli.main`).

Usage::

    python -m lightning_clr.run                                # range test + WSD (the default)
    python -m lightning_clr.run +schedule=sgdr                 # range test + SGDR
    python -m lightning_clr.run +schedule=triangular2 model=mlp trainer.max_epochs=40
    python -m lightning_clr.run -m +schedule=triangular2,sgdr,one_cycle   # one run each
"""

from lightning_clr.cli.main import build, cli, config_dir, main, train

__all__ = ["build", "cli", "config_dir", "main", "train"]

if __name__ == "__main__":
    cli()
