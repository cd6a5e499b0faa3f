"""Magnitude-selective merging (DLER, arXiv 2510.15110, section 4.6; docs/algorithms.md §2).

Merge a concise RL-tuned model back into its base, keeping only its largest updates::

    D = W_tuned - W_base                        (float32)
    W_merged = W_base + scale * (D * top_density(|D|))

    python -m merge.selective --base BASE --tuned TUNED --out OUT [--density 0.25 --scale 0.7]

``--scope tensor`` keeps the top fraction of every tensor (mergekit's ``ties`` with one
model computes the same weights); ``--scope global`` uses one exact magnitude threshold
over all selected tensors (TIES-style). The checkpoint is streamed: a few tensors are in
memory at once, large tensors are processed in chunks (split across threads), tensors are
read ahead and written on background threads into memory that is reused, and global scope makes two passes over the inputs (histogram,
then write; see `merge.select`) instead of holding every delta. In Python: `merge_models(cfg)`.

The code: `merge.config` (settings and checks), `merge.plan` (inputs resolved, one job
per tensor), `merge.engine` (the streaming selection), `merge.stream` (inputs read into
reused buffers), `merge.slices` (threads), `merge.record` (record, card), `merge.writer`
(sharded output); this module runs them and is the CLI.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from artifacts import cli
from artifacts.cli import HubArguments
from artifacts.errors import run_cli
from artifacts.hub import push_folder
from artifacts.outdir import atomic_output_dir
from merge.config import MergeConfig
from merge.engine import run_global_scope, run_tensor_scope
from merge.plan import TOKENIZER_FILES, MergePlan, describe, plan_merge
from merge.record import merge_record, write_card
from merge.stream import slot_bytes
from merge.writer import ShardedWriter, plan_shards


def merge_models(cfg: MergeConfig, hub: HubArguments | None = None, hf_api=None) -> Path | None:
    """Run one merge; returns the output folder (None for a dry run).

    ``hub`` says whether and where to upload the output (`HubArguments`; None: nowhere).
    ``hf_api`` (an `huggingface_hub.HfApi`) is used for the upload; injectable for tests.
    """
    hub = hub or HubArguments()
    repo = hub.hub_repo()  # a missing repo id fails here, before the merge
    plan = plan_merge(cfg)
    if cfg.dry_run:
        print(describe(plan, hub))
        return None
    threads = torch.get_num_threads()
    # one intra-op thread: the engine splits each chunk across threads of its own
    # (`merge.slices`), which also keeps every number independent of --threads
    torch.set_num_threads(1)
    try:
        out = _run(plan)
    finally:
        torch.set_num_threads(threads)
    if repo:
        url = push_folder(
            out,
            repo,
            private=hub.hub_private_repo,
            api=hf_api,
            commit_message=f"Magnitude-selective merge (density {cfg.density}, scale {cfg.scale})",
        )
        print(f"uploaded to {url}")
    return out


def _run(plan: MergePlan) -> Path:
    cfg = plan.cfg
    out = Path(cfg.out)
    t0 = time.perf_counter()
    shards = plan_shards([(j.name, j.out_dtype, j.shape) for j in plan.jobs], plan.shard_size)
    passes = 2 if cfg.scope == "global" else 1
    total = passes * plan.merged_numel + sum(j.numel for j in plan.jobs if j.action != "merge")
    with atomic_output_dir(out, force=cfg.force) as tmp:
        writer = ShardedWriter(tmp, shards, buffer_bytes=slot_bytes())
        threshold = None
        try:
            with tqdm(
                total=total, unit="param", unit_scale=True, desc=f"merge ({cfg.scope})"
            ) as bar:
                if cfg.scope == "global":
                    stats, threshold = run_global_scope(plan, writer, bar)
                else:
                    stats = run_tensor_scope(plan, writer, bar)
        except BaseException:
            writer.abort()  # stop the writer thread; the temporary folder is then removed
            raise
        writer.close()  # no-op when the global scope closed it already
        writer.write_index()
        (tmp / "config.json").write_text(
            json.dumps(plan.out_config, indent=2, sort_keys=True) + "\n"
        )
        for f in TOKENIZER_FILES:
            if (plan.tokenizer_folder / f).exists():
                shutil.copyfile(plan.tokenizer_folder / f, tmp / f)
        record = merge_record(plan, stats, threshold, time.perf_counter() - t0)
        (tmp / "merge_record.json").write_text(json.dumps(record, indent=1) + "\n")
        write_card(plan, tmp, record)
    return out


# --------------------------------------------------------------------------------- CLI

DESCRIPTION = (
    "Magnitude-selective merge (DLER, arXiv 2510.15110, section 4.6): "
    "merged = base + scale * (delta * mask), delta = tuned - base in float32, where mask "
    "keeps the `density` fraction of |delta| with the largest magnitude (exactly "
    "k = max(1, floor(density * n)) entries; ties go to the earlier entry). Streamed "
    "tensor by tensor; written as sharded safetensors with config, tokenizer, chat "
    "template, generation config, model card (README.md) and merge_record.json."
)
EPILOG = (
    "examples:\n"
    "  python -m merge.selective --base deepseek-ai/DeepSeek-R1-Distill-Qwen-7B \\\n"
    "      --tuned your-org/your-dler-tuned-7b --out runs/merged --config configs/merge/dler.yaml\n"
    "  python -m merge.selective --base B --tuned lora_adapter/ --out O --scope global \\\n"
    "      --exclude embed_tokens lm_head --dry_run"
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[MergeConfig, HubArguments]:
    """``[--config recipe.yaml] [--flags]`` -> the merge's settings and its publishing."""
    return cli.parse_args(
        [MergeConfig, HubArguments],
        argv,
        prog="merge.selective",
        description=DESCRIPTION,
        epilog=EPILOG,
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg, hub = parse_args(argv)
    out = merge_models(cfg, hub)
    if out is not None:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    # Everything imported lives until exit; frozen, it is left out of the interpreter's
    # final garbage collection, which otherwise walks torch's objects (0.3 s at exit).
    gc.freeze()
    run_cli(main, sys.argv[1:])
