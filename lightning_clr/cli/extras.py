"""Optional extras: which Hydra plugin each one installs, and the one-line hint when it is missing.

``pip install "lightning-clr[optuna]"`` brings ``hydra-optuna-sweeper`` (``+sweep=optuna_lr``),
``pip install "lightning-clr[cluster]"`` brings ``hydra-submitit-launcher``
(``hydra/launcher=slurm``, ``submitit_slurm``, ``submitit_local``). Without them Hydra only
knows that a config option does not exist; :func:`missing_extra` names the extra instead.
"""

from __future__ import annotations

from hydra.errors import MissingConfigException

#: config a plugin registers -> (extra, the PyPI package the extra installs)
PLUGIN_CONFIGS = {
    "hydra/sweeper/optuna": ("optuna", "hydra-optuna-sweeper"),
    "hydra/launcher/submitit_slurm": ("cluster", "hydra-submitit-launcher"),
    "hydra/launcher/submitit_local": ("cluster", "hydra-submitit-launcher"),
}


def missing_extra(err: BaseException) -> str | None:
    """One line naming the extra to install when ``err`` is Hydra's missing config of a plugin, else None.

    Example::

        hydra/sweeper=optuna needs the optional extra 'optuna' (hydra-optuna-sweeper):
        pip install "lightning-clr[optuna]"   (printed on one line)
    """
    if not isinstance(err, MissingConfigException) or err.missing_cfg_file not in PLUGIN_CONFIGS:
        return None
    extra, package = PLUGIN_CONFIGS[err.missing_cfg_file]
    group, _, name = err.missing_cfg_file.rpartition("/")
    return f'{group}={name} needs the optional extra \'{extra}\' ({package}): pip install "lightning-clr[{extra}]"'
