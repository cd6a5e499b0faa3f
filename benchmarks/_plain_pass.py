"""The I/O floor of a merge: read both models, write ``base + 0.7 * (tuned - base)``.

    python benchmarks/_plain_pass.py BASE TUNED OUT

No selection at all; the straightforward way with the safetensors library (one input
shard at a time via ``safe_open``, one output shard per input shard via ``save_file``).
Runs on one intra-op thread like ``merge.selective``'s default (faster on a shared
machine; set OMP_NUM_THREADS / pass a second argument to change it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def main(base: str, tuned: str, out: str, threads: str = "1") -> None:
    torch.set_num_threads(int(threads))
    base, tuned, out = Path(base), Path(tuned), Path(out)
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


if __name__ == "__main__":
    main(*sys.argv[1:5])
