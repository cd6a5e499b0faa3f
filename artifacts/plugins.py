"""Loading a plug-in function named ``package.module:function`` (graders, answer detectors),
so packages can extend each other without importing each other."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from artifacts.errors import ShortcotError


def load_callable(target: str, what: str, known: list[str]) -> Callable:
    """Import ``module:function``; ``what`` names the kind ("grader") and ``known`` the
    built-in names, both for the error message."""
    if ":" not in target:
        raise ShortcotError(
            f"unknown {what} {target!r}; use one of {sorted(known)} or module:function"
        )
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ShortcotError(
            f"cannot load {what} {target!r} ({err}); check the module:function name"
        ) from err
    if not callable(obj):
        raise ShortcotError(
            f"{what} {target!r} is a {type(obj).__name__}, not a function; "
            "point module:function at a callable"
        )
    return obj
