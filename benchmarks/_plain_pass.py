"""The I/O floor of a merge: read both models, write ``base + 0.7 * (tuned - base)``.

    python benchmarks/_plain_pass.py --base BASE --tuned TUNED --out OUT [--threads 1]

No selection at all; the straightforward way with the safetensors library (one input
shard at a time via ``safe_open``, one output shard per input shard via ``save_file``).
Parses its flags with `artifacts.cli` like ``merge.selective``, so both pay the same start.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402


@dataclass
class PlainPassConfig:
    """A read-add-write pass over two sharded safetensors models of the same layout."""

    base: str = arg(help="base model folder (sharded safetensors with an index)")
    tuned: str = arg(help="tuned model folder, same tensors as the base")
    out: str = arg(help="output folder (replaced)")
    threads: int = arg(1, "intra-op threads (default %(default)s)")


def plain_pass(cfg: PlainPassConfig) -> None:
    torch.set_num_threads(cfg.threads)
    base, tuned, out = Path(cfg.base), Path(cfg.tuned), Path(cfg.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    tuned_index = json.loads((tuned / "model.safetensors.index.json").read_text())["weight_map"]
    for shard in sorted(set(index.values())):
        names = [n for n, f in index.items() if f == shard]
        result = {}
        with safe_open(base / shard, "pt") as fb:
            for name in names:
                with safe_open(tuned / tuned_index[name], "pt") as ft:
                    t = ft.get_tensor(name).float()
                b = fb.get_tensor(name)
                result[name] = (b.float() + 0.7 * (t - b.float())).to(b.dtype)
                del t, b
        save_file(result, out / shard, metadata={"format": "pt"})
        del result
    shutil.copy(base / "model.safetensors.index.json", out)
    shutil.copy(base / "config.json", out)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PlainPassConfig]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [PlainPassConfig], argv, prog="benchmarks._plain_pass", description=__doc__.split("\n\n")[0]
    )


def main(argv: Sequence[str] | None = None) -> int:
    (cfg,) = parse_args(argv)
    plain_pass(cfg)
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
