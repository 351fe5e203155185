"""Paper recipes: Hydra configs selected with ``+recipe=NAME`` (see README.md in this folder).

This folder ships inside the wheel as the package ``lightning_clr.recipes``; ``conf/config.yaml``
adds it to Hydra's search path, so ``python -m lightning_clr.run +recipe=NAME`` works from any
working directory.
"""
