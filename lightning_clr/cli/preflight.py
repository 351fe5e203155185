"""Checks the entry point runs before any training, so that a run fails at once, on one line.

* :func:`preflight`: the output folder and ``$TMPDIR`` can be written.
* :func:`resume_path`: ``ckpt_path=last`` means this run's own ``checkpoints/last.ckpt``;
  with a new run directory there is none, and the error names the newest one on disk.
* :func:`check_folders`: no folder the run writes to lies, directly or through a link, in
  another job's run folder.
* :func:`check_checkpoint`: the file given to resume from is a readable checkpoint of the
  configured model, of plain tensors and numbers (``torch.load(weights_only=True)`` accepts
  it), or, with ``trust_checkpoint=true``, of any objects (loading it runs the code it names).
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import OverrideParseException
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lightning_clr.cli.config import ConfigError, plain_text
from lightning_clr.cli.faults import check_writable, temp_dir
from lightning_clr.cli.rundir import check_ours

__all__ = ["check_checkpoint", "check_folders", "explain_override", "preflight", "resume_path"]

#: the config key that lets a checkpoint holding Python objects load (``weights_only=False``)
TRUST_KEY = "trust_checkpoint"
#: packages whose objects a checkpoint of a configured run may hold besides the config's own
#: targets: torch (modules, optimizers) and Hydra's partials
_EXPECTED_PACKAGES = frozenset({"torch", "hydra", "functools", "collections"})

_RESUME_HINT = "+ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt"


def explain_override(err: BaseException) -> BaseException:
    """A command-line override Hydra cannot parse, as one line naming it and the fix; other errors unchanged.

    Example::

        error: finder.bounds=[0.01,0.3: cannot parse this override (no viable alternative at input
        '[0.01,0.3'); close every bracket and quote, e.g. finder.bounds=[0.01,0.3] ...
    """
    if not isinstance(err, OverrideParseException):
        return err
    detail = " ".join(str(err.message).split()).split(" See https://")[0]
    return ConfigError(
        f"{err.override}: cannot parse this override ({detail}); close every bracket and quote, e.g. "
        "finder.bounds=[0.01,0.3] or key='a b', with no spaces around commas unless the override is quoted"
    )


def preflight(cfg: DictConfig) -> None:
    """Check the folders the run writes to, before the range test.

    Every output folder must be this run's (:func:`check_folders`); ``cfg.output_dir`` and the
    temporary folder must be writable.

    Raises:
        RunDirInUse: a folder lies in another job's run folder.
        NotWritableError: one line naming the folder and the key that chose it.
    """
    check_folders(cfg)
    if cfg.get("output_dir"):
        check_writable(cfg.output_dir, "output_dir")
    key, folder = temp_dir()
    check_writable(folder, key)


def _output_folders(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(key, folder)`` of every folder the configured run writes to that the config names."""
    keys = ["output_dir", "trainer.default_root_dir", "logger.save_dir"]
    keys += [f"callbacks.{name}.dirpath" for name, node in (cfg.get("callbacks") or {}).items()
             if isinstance(node, DictConfig) and "dirpath" in node]
    found = []
    for key in keys:
        node, _, leaf = key.rpartition(".")
        try:
            parent = cfg if not node else OmegaConf.select(cfg, node)
            value = parent.get(leaf) if isinstance(parent, DictConfig) else None
        except OmegaConfBaseException:  # an interpolation only Hydra's app can resolve: checked there
            continue
        if isinstance(value, str) and value and "://" not in value:
            found.append((key, value))
    return found


def check_folders(cfg: DictConfig) -> None:
    """Refuse an output folder (the run's, the checkpoints', the logger's) that lies in another job's run folder.

    A ``checkpoints/`` folder that is a link into another run's folder would make Lightning save
    ``last-v1.ckpt`` beside that run's ``last.ckpt``.

    Raises:
        RunDirInUse: one line naming the key, where it leads and the fix.
    """
    for key, folder in _output_folders(cfg):
        check_ours(folder, key)


def _checkpoint_dir(cfg: DictConfig) -> Path | None:
    node = (cfg.get("callbacks") or {}).get("checkpoint")
    if node is not None and node.get("dirpath"):
        return Path(str(node.dirpath))
    return Path(str(cfg.output_dir)) / "checkpoints" if cfg.get("output_dir") else None


def resume_path(cfg: DictConfig, check: Callable[[DictConfig], str | None],
                search: Path | None = None) -> str | None:
    """The checkpoint to resume from: ``ckpt_path=last`` becomes this run's ``last.ckpt``.

    Lightning reads ``ckpt_path=last`` as the last checkpoint in the checkpoint callback's
    folder, which is empty in a new run directory: the run would silently start afresh.

    Args:
        cfg: the composed config.
        check: reads and checks ``cfg.ckpt_path`` (:func:`lightning_clr.cli.config.checkpoint_path`);
            called after a path too long for the file system has been refused.
        search: where to look for earlier runs' checkpoints to name in the error (default
            ``./outputs``).

    Raises:
        ConfigError: a file name too long, or ``ckpt_path=last`` and this run's folder has no
            ``last.ckpt``.
    """
    given = cfg.get("ckpt_path")
    if given is not None:
        try:
            os.stat(str(given))
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG:
                raise ConfigError(f"ckpt_path={str(given)[:60]}...: file name too long ({len(str(given))} "
                                  "characters); pass the checkpoint's real, shorter path") from None
    path = check(cfg)
    if path != "last":
        return path
    folder = _checkpoint_dir(cfg)
    if folder is not None and (folder / "last.ckpt").is_file():
        return str(folder / "last.ckpt")
    search = Path("outputs") if search is None else search
    found = sorted(search.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime) if search.is_dir() else []
    newest = f"; the newest on disk is +ckpt_path={found[-1]}" if found else ""
    raise ConfigError(
        f"ckpt_path=last: this run's folder {folder} has no last.ckpt (every run gets a new folder); "
        f"pass the checkpoint to resume from instead, e.g. {_RESUME_HINT}{newest}"
    )


def _foreign_globals(path: str) -> list[str]:
    """The globals (classes, functions) a checkpoint's pickle names beyond plain data, read without running any."""
    find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch 2.5 and later
    if find is None:
        return []
    try:
        return list(find(path))
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
        return []  # not a zip checkpoint: the refusal names torch's own reason instead


def _packages(node: object) -> set[str]:
    """Top-level packages of every ``_target_`` in a config node."""
    if isinstance(node, DictConfig):
        found = {str(node.get("_target_")).split(".")[0]} if node.get("_target_") else set()
        for key in node:
            try:
                found |= _packages(node[key])
            except OmegaConfBaseException:
                continue
        return found
    if isinstance(node, ListConfig):
        return set().union(set(), *(_packages(v) for v in node))
    return set()


def _object_arguments(cfg: DictConfig | None) -> list[str]:
    """Arguments of the configured model that receive objects (nodes with a ``_target_``): what to ignore."""
    model = cfg.get("model") if cfg is not None else None
    if not isinstance(model, DictConfig):
        return []
    return [str(k) for k, v in model.items() if isinstance(v, DictConfig) and "_target_" in v]


def _trust_flag(cfg: DictConfig | None) -> str:
    """How to set the trust key on the command line: ``trust_checkpoint=true`` once the config has it."""
    return f"{TRUST_KEY}=true" if cfg is not None and TRUST_KEY in cfg else f"+{TRUST_KEY}=true"


def _refusal(path: str, err: BaseException, cfg: DictConfig | None) -> str:
    """Why a checkpoint holding Python objects is refused, and the two ways out, on one line."""
    try:
        ours = _packages(cfg)
    except OmegaConfBaseException:
        ours = set()
    known = _EXPECTED_PACKAGES | ours
    names = sorted(_foreign_globals(path), key=lambda n: (n.split(".")[0] in _EXPECTED_PACKAGES, n))
    strange = [n for n in names if n.split(".")[0] not in known]
    flag = _trust_flag(cfg)
    if strange:
        listed = ", ".join(strange[:4]) + (", ..." if len(strange) > 4 else "")
        return (f"ckpt_path={path}: refused, it pickles {listed}, which neither torch nor this run's config names, "
                f"and loading it would run that code; do not load it unless you know who wrote it ({flag} loads "
                "it as code)")
    if names:
        held = "objects " + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    else:
        first = plain_text(str(err)).split(". ")[0]
        held = f"objects other than tensors and plain data ({first[:120]})"
    args = _object_arguments(cfg)
    ignore = ", ".join(repr(a) for a in args) if args else "...the arguments that hold objects..."
    return (f"ckpt_path={path}: refused, it pickles {held}, and loading them runs code (a module whose "
            "save_hyperparameters() stored an nn.Module or a functools.partial writes such checkpoints); "
            f"if this run wrote it, resume with {flag}; to keep objects out of new checkpoints, call "
            f"self.save_hyperparameters(ignore=[{ignore}])")


def _load(path: str, trust: bool = False, cfg: DictConfig | None = None) -> dict[str, Any]:
    fix = "pass an intact checkpoint (e.g. the previous last.ckpt) or drop ckpt_path"
    try:
        try:  # reads no tensor data
            return torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
        except (RuntimeError, OSError):  # not memory-mappable (an old format, a broken zip): read it
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        text = plain_text(str(err))
        if not trust and ("weights_only" in text or "Unsupported global" in text or "Weights only" in text):
            raise ConfigError(_refusal(path, err, cfg)) from None
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({text[:160] or type(err).__name__}); "
                          f"{fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        if isinstance(err, OSError) and err.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"ckpt_path={path[:80]}...: file name too long; pass a shorter path") from None
        text = plain_text(str(err))[:160] or type(err).__name__
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint, truncated or corrupt ({text}); {fix}") from None
    except (ImportError, AttributeError) as err:  # trusted, but a class it names is gone
        raise ConfigError(f"ckpt_path={path}: it names {plain_text(str(err))[:160]}; install the code that wrote "
                          "it, or resume with the model= and model.* overrides the run was trained with") from None


def trusts_checkpoint(cfg: DictConfig | None) -> bool:
    """Whether ``trust_checkpoint=true`` (``+trust_checkpoint=true`` before the key is in the config) is set.

    Raises:
        ConfigError: a value that is not a boolean.
    """
    value = cfg.get(TRUST_KEY, False) if cfg is not None else False
    if not isinstance(value, bool):
        raise ConfigError(f"{TRUST_KEY}={value!r}: must be true or false")
    return value


def check_checkpoint(path: str | None, model: L.LightningModule, cfg: DictConfig | None = None) -> None:
    """Refuse, before ``fit``, a checkpoint that cannot be read or belongs to another model.

    A checkpoint holding Python objects besides tensors and plain data (a module whose
    ``save_hyperparameters()`` stored an ``nn.Module`` or a ``functools.partial``) is refused
    unless ``cfg.trust_checkpoint`` is true; nothing in it runs. The refusal lists what it holds
    and says whether torch or the run's config names each, and how to resume or avoid it.

    Args:
        path: the resolved checkpoint path (``None``: no resume, nothing to check).
        model: the configured model, whose ``state_dict`` keys and shapes must match.
        cfg: the composed config (``trust_checkpoint``, the model node); ``None``: plain data only.

    Raises:
        ConfigError: truncated or corrupt file, objects ``weights_only=True`` refuses (without
            ``trust_checkpoint=true``), not a Lightning checkpoint, or weights of another model;
            one line naming the first mismatches and the fix.
    """
    if path is None or not os.path.isfile(path):
        return
    trust = trusts_checkpoint(cfg)
    if trust:
        names = _foreign_globals(path)
        if names:
            rank_zero_info(f"ckpt_path={path}: {TRUST_KEY}=true, loading it runs the code of {', '.join(names)}")
    state = _load(path, trust, cfg)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"ckpt_path={path}: not a Lightning checkpoint (no state_dict); pass a .ckpt that "
                          "Trainer.fit or +callbacks=checkpoint wrote")
    have = {k: tuple(v.shape) for k, v in state["state_dict"].items() if isinstance(v, torch.Tensor)}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not want:  # parameters created later (configure_model, lazy modules): Lightning checks on load
        return
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in want if k in have and have[k] != want[k]]
    if missing or unexpected or shapes:
        parts = [f"missing {', '.join(missing[:3])}" if missing else "",
                 f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                 f"shape {', '.join(shapes[:3])} (checkpoint vs model)" if shapes else ""]
        raise ConfigError(
            f"ckpt_path={path}: the checkpoint holds another model ({'; '.join(p for p in parts if p)}); "
            "resume with the model= and model.* overrides the run was trained with"
        )
