"""Dtype names on the command line -> torch dtypes: one table for every command.

Commands take a dtype by name (``--dtype bfloat16``); the short names that
``transformers.TrainingArguments`` users type (``bf16``, ``fp16``, ``fp32``) are accepted
too and mean the same dtype. torch is imported only when a dtype is resolved, so that
importing this module (every CLI does, through its config) stays cheap.

>>> dtype_name("bf16"), str(torch_dtype("float32"))
('bfloat16', 'torch.float32')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from artifacts.errors import ShortcotError

if TYPE_CHECKING:
    import torch

DtypeName = Literal["bfloat16", "float16", "float32"]
"""The canonical names, for a config field's type (``--help`` lists them as choices)."""

DTYPE_NAMES: tuple[str, ...] = ("bfloat16", "float16", "float32")
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def dtype_name(name: str) -> str:
    """The canonical name of ``name`` (a canonical name or an alias); else a one-line error."""
    canonical = ALIASES.get(name, name)
    if canonical not in DTYPE_NAMES:
        raise ShortcotError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return canonical


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (``"bfloat16"`` or ``"bf16"`` -> ``torch.bfloat16``)."""
    import torch

    return getattr(torch, dtype_name(name))
