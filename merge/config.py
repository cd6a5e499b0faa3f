"""The settings of one magnitude-selective merge and their checks.

Every field is a ``python -m merge.selective`` flag (``--shard_size`` or ``--shard-size``)
and a key of a ``--config`` recipe; its help text is its ``--help`` line. Publishing is not
here: the CLI takes `artifacts.cli.HubArguments` next to this config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch

from artifacts.cli import arg
from artifacts.dtypes import DtypeName, dtype_name
from artifacts.errors import ShortcotError
from merge.writer import parse_size


@dataclass
class MergeConfig:
    """Settings of one magnitude-selective merge (every field is also a CLI flag)."""

    base: str = arg(help="base model: local folder or Hub repo id (safetensors, single or sharded)")
    tuned: str = arg(
        help="tuned model trained from the base (folder or Hub id), or a PEFT LoRA adapter "
        "folder trained on the base (its delta is scaling * B @ A, no merged copy is written)"
    )
    out: str = arg(help="output folder; written atomically, never overwritten without --force")
    density: float = arg(
        0.25, "fraction of |tuned - base| entries kept, in (0, 1] (DLER: %(default)s)"
    )
    scale: float = arg(0.7, "factor on the kept delta, no 1/density rescale (DLER: %(default)s)")
    scope: Literal["tensor", "global"] = arg(
        "tensor",
        "tensor: top fraction of every tensor (the same weights as mergekit ties); global: one "
        "exact threshold over all merged tensors, ties to the tensor stored first "
        "(default %(default)s)",
    )
    exclude: list[str] = arg(
        [],
        "regexes (re.search on tensor names); matching tensors are copied, not merged; "
        "e.g. --exclude embed_tokens 'norm\\.weight$' (repeating --exclude adds more, also to "
        "a recipe's list)",
        action="extend",
        metavar="REGEX",
    )
    exclude_takes: Literal["base", "tuned"] = arg(
        "base", "model that excluded tensors are copied from (default %(default)s)"
    )
    dtype: DtypeName | None = arg(
        None, "output dtype (default: each tensor's dtype in the tuned model)"
    )
    device: str = arg(
        "cpu", "device for the selection arithmetic, cpu or cuda (default %(default)s)"
    )
    shard_size: str = arg("5GB", "largest output shard, e.g. 5GB or 500MB (default %(default)s)")
    tokenizer_from: Literal["tuned", "base"] = arg(
        "tuned",
        "model whose tokenizer, chat template and generation config are copied "
        "(default %(default)s)",
    )
    base_revision: str | None = arg(None, "Hub revision (branch, tag, commit) of --base")
    tuned_revision: str | None = arg(None, "Hub revision of --tuned")
    dry_run: bool = arg(
        False, "check the inputs and print what would be written and uploaded; write nothing"
    )
    force: bool = arg(False, "replace an existing --out folder")
    hash_inputs: bool = arg(
        False,
        "record the sha256 of every input weight file in merge_record.json (reads them once "
        "more; by default the record holds Hub revisions, sizes and header hashes)",
    )
    threads: int | None = arg(
        None,
        "threads for the arithmetic, each chunk split among them (default: one per core "
        "this process may use, at most 8; reading and writing run on threads of their own; "
        "on a shared machine pass fewer); the output is the same for any number",
    )


def validate(cfg: MergeConfig) -> list[re.Pattern]:
    """Check the settings that need no file; returns the compiled exclude patterns."""
    if not (isinstance(cfg.density, int | float) and 0 < cfg.density <= 1):
        raise ShortcotError(f"--density {cfg.density} is outside (0, 1]; pass e.g. --density 0.25")
    if not math.isfinite(cfg.scale):
        raise ShortcotError(f"--scale {cfg.scale} is not a finite number; pass e.g. --scale 0.7")
    if cfg.scope not in ("tensor", "global"):
        raise ShortcotError(f"--scope {cfg.scope!r} is not tensor or global")
    if cfg.exclude_takes not in ("base", "tuned"):
        raise ShortcotError(f"--exclude_takes {cfg.exclude_takes!r} is not base or tuned")
    if cfg.tokenizer_from not in ("base", "tuned"):
        raise ShortcotError(f"--tokenizer_from {cfg.tokenizer_from!r} is not base or tuned")
    if cfg.dtype is not None:
        dtype_name(cfg.dtype)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ShortcotError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    parse_size(cfg.shard_size)
    if cfg.threads is not None and cfg.threads < 1:
        raise ShortcotError(f"--threads {cfg.threads} must be at least 1")
    patterns = []
    for p in cfg.exclude:
        try:
            patterns.append(re.compile(p))
        except re.error as err:
            raise ShortcotError(
                f"--exclude {p!r} is not a valid regular expression ({err})"
            ) from err
    return patterns
