"""Checks the entry point runs before any training, so that a run fails at once, on one line.

* :func:`preflight`: the output folder and ``$TMPDIR`` can be written.
* :func:`resume_path`: ``ckpt_path=last`` means this run's own ``checkpoints/last.ckpt``;
  with a new run directory there is none, and the error names the newest one on disk.
* :func:`check_checkpoint`: the file given to resume from is a readable checkpoint of plain
  tensors and numbers (``torch.load(weights_only=True)`` accepts it) of the configured model.
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
from omegaconf import DictConfig

from lightning_clr.cli.config import ConfigError
from lightning_clr.cli.faults import check_writable, temp_dir

__all__ = ["check_checkpoint", "explain_override", "preflight", "resume_path"]

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
    """Check that ``cfg.output_dir`` and the temporary folder can be written, before the range test.

    Raises:
        NotWritableError: one line naming the folder and the key that chose it.
    """
    if cfg.get("output_dir"):
        check_writable(cfg.output_dir, "output_dir")
    key, folder = temp_dir()
    check_writable(folder, key)


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


def _load(path: str) -> dict[str, Any]:
    fix = "pass an intact checkpoint (e.g. the previous last.ckpt) or drop ckpt_path"
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads no tensor data
        except (RuntimeError, OSError):  # not memory-mappable (an old format, a broken zip): read it
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise ConfigError(
                f"ckpt_path={path}: refused, it holds objects other than tensors and plain data, which "
                f"torch.load(weights_only=True) does not run ({first[:160]}); only load checkpoints you trust, "
                "with their own code"
            ) from None
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({first[:160]}); {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as err:
        if isinstance(err, OSError) and err.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"ckpt_path={path[:80]}...: file name too long; pass a shorter path") from None
        text = " ".join(str(err).split())[:160] or type(err).__name__
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint, truncated or corrupt ({text}); {fix}") from None


def check_checkpoint(path: str | None, model: L.LightningModule) -> None:
    """Refuse, before ``fit``, a checkpoint that cannot be read or belongs to another model.

    Args:
        path: the resolved checkpoint path (``None``: no resume, nothing to check).
        model: the configured model, whose ``state_dict`` keys and shapes must match.

    Raises:
        ConfigError: truncated or corrupt file, objects ``weights_only=True`` refuses, not a
            Lightning checkpoint, or weights of another model; one line naming the first
            mismatches and the fix.
    """
    if path is None or not os.path.isfile(path):
        return
    state = _load(path)
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
