"""Renamed arguments: the old name keeps working for a while, with a warning naming the new one."""

from __future__ import annotations

import warnings
from typing import Any


def renamed(owner: str, old: dict[str, Any], names: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    """Map old keyword arguments to their new names, warning once per use.

    Args:
        owner: what takes the arguments, for the messages (e.g. ``"LRRangeTest"``).
        old: the keyword arguments received under old (or unknown) names.
        names: ``{old_name: new_name}``.
        given: the new-name arguments as passed, to refuse an argument given under both names.

    Returns:
        ``{new_name: value}`` for every old name in ``old``.

    Raises:
        TypeError: for a name that is neither current nor a known old one, or a value
            given under both its old and its new name.
    """
    out: dict[str, Any] = {}
    for key, value in old.items():
        if key not in names:
            raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
        new = names[key]
        if given.get(new) is not None:
            raise TypeError(f"{owner}: {key}= is the old name of {new}=; pass only {new}=")
        warnings.warn(f"{owner}: {key}= is renamed {new}=; {key}= will be removed", DeprecationWarning, stacklevel=3)
        out[new] = value
    return out
