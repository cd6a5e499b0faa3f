"""Planning a merge: resolve both inputs, check that they can be merged, and decide what
happens to every output tensor (merged, excluded, or copied), before anything is written.

mergekit plans a merge the same way (a task graph before any tensor is loaded); here the
plan is a flat list of `Job`s in the order the tuned checkpoint stores its tensors, which
is the order the engine reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from artifacts.cli import HubArguments
from artifacts.dtypes import dtype_name, torch_dtype
from artifacts.errors import ShortcotError
from artifacts.hub import resolve_local
from artifacts.outdir import check_free_space, check_output, remove_stale_temporaries
from merge.checkpoint import (
    OUTPUT_EMBEDDINGS,
    Checkpoint,
    CheckpointDeltas,
    LoraDeltas,
    TensorInfo,
    input_embedding_name,
    open_tuned,
    ties_embeddings,
)
from merge.config import MergeConfig, validate
from merge.writer import parse_size, plan_shards

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


@dataclass
class Job:
    """One output tensor: where its inputs come from and what happens to it."""

    name: str
    base_name: str  # the base tensor it is merged with (differs for a tied output embedding)
    action: Literal["merge", "exclude", "copy"]
    shape: tuple[int, ...]
    out_dtype: torch.dtype
    numel: int


@dataclass
class MergePlan:
    cfg: MergeConfig
    base_folder: Path
    tuned_folder: Path
    base: Checkpoint
    tuned: CheckpointDeltas | LoraDeltas
    jobs: list[Job]
    dropped: list[str]
    out_config: dict
    tokenizer_folder: Path
    shard_size: int

    @property
    def out_bytes(self) -> int:
        return sum(j.numel * torch.empty((), dtype=j.out_dtype).element_size() for j in self.jobs)

    @property
    def merged_numel(self) -> int:
        return sum(j.numel for j in self.jobs if j.action == "merge")


def _arch(config: dict) -> tuple:
    return (tuple(config.get("architectures") or ()), config.get("model_type"))


def plan_merge(cfg: MergeConfig) -> MergePlan:
    """Resolve the inputs and check that they can be merged; nothing is written."""
    patterns = validate(cfg)
    check_output(cfg.out, cfg.force)  # a dry run reports it too: the real run would fail
    base_folder = resolve_local(cfg.base, revision=cfg.base_revision, allow_patterns=HUB_PATTERNS)
    tuned_folder = resolve_local(
        cfg.tuned, revision=cfg.tuned_revision, allow_patterns=HUB_PATTERNS
    )
    base = Checkpoint(base_folder)
    tuned = open_tuned(tuned_folder, base)
    if isinstance(tuned, CheckpointDeltas) and _arch(base.config) != _arch(tuned.config):
        raise ShortcotError(
            f"architectures differ: base {_arch(base.config)} vs tuned {_arch(tuned.config)}; "
            "the tuned model must be trained from the base"
        )

    # Names: identical sets, except for an output embedding tied in one model and stored
    # in the other. The output follows the tuned model's tensors.
    base_names, tuned_names = set(base.tensors), set(tuned.tensors)
    alias: dict[str, str] = {}
    for name in sorted(tuned_names - base_names):
        partner = input_embedding_name(base.tensors, tuned.tensors[name].shape)
        if name.endswith(OUTPUT_EMBEDDINGS) and ties_embeddings(base.config) and partner:
            alias[name] = (
                partner  # base ties its output embedding: merge against the input embedding
            )
    dropped = sorted(
        n
        for n in base_names - tuned_names
        if n.endswith(OUTPUT_EMBEDDINGS) and ties_embeddings(tuned.config)
    )
    only_tuned = sorted(tuned_names - base_names - set(alias))
    only_base = sorted(base_names - tuned_names - set(dropped))
    if only_tuned or only_base:
        raise ShortcotError(
            f"tensor names differ: only in tuned {only_tuned[:3]}{'...' if len(only_tuned) > 3 else ''}, "
            f"only in base {only_base[:3]}{'...' if len(only_base) > 3 else ''}; "
            "pass a tuned model of the same architecture as the base"
        )

    out_dtype = torch_dtype(cfg.dtype) if cfg.dtype else None
    jobs = []
    # Read in file order so that disk reads are sequential.
    for name in sorted(
        tuned.tensors, key=lambda n: (str(tuned.tensors[n].file), tuned.tensors[n].start)
    ):
        t_info: TensorInfo = tuned.tensors[name]
        base_name = alias.get(name, name)
        b_info = base.tensors[base_name]
        if t_info.shape != b_info.shape:
            raise ShortcotError(
                f"tensor {name} has shape {list(t_info.shape)} in tuned but {list(b_info.shape)} in base "
                "(e.g. a resized vocabulary); pass models with the same shapes"
            )
        floating = t_info.dtype.is_floating_point and b_info.dtype.is_floating_point
        if not floating:
            action = "copy"
        elif any(p.search(name) for p in patterns):
            action = "exclude"
        else:
            action = "merge"
        dtype = out_dtype if (out_dtype is not None and floating) else t_info.dtype
        jobs.append(Job(name, base_name, action, t_info.shape, dtype, t_info.numel))
    if not any(j.action == "merge" for j in jobs):
        raise ShortcotError("every tensor is excluded; loosen --exclude")

    out_config = dict(tuned.config)
    if out_dtype is not None:
        out_config["dtype"] = dtype_name(cfg.dtype)
        if "torch_dtype" in out_config:
            out_config["torch_dtype"] = dtype_name(cfg.dtype)
    if alias and ties_embeddings(out_config):
        out_config["tie_word_embeddings"] = False  # the output stores its own output embedding
    tok_src = base_folder if cfg.tokenizer_from == "base" else tuned_folder
    if isinstance(tuned, LoraDeltas) and not any((tok_src / f).exists() for f in TOKENIZER_FILES):
        tok_src = base_folder  # an adapter without tokenizer files uses the base's
    plan = MergePlan(
        cfg,
        base_folder,
        tuned_folder,
        base,
        tuned,
        jobs,
        dropped,
        out_config,
        tok_src,
        parse_size(cfg.shard_size),
    )
    out = Path(cfg.out).expanduser().absolute()
    if not cfg.dry_run:
        remove_stale_temporaries(out)  # a killed merge's leftovers count against free space
    check_free_space(out.parent, plan.out_bytes + 10_000_000)
    return plan


def describe(plan: MergePlan, hub: HubArguments | None = None) -> str:
    """What a merge would write, and where it would upload it (for --dry_run)."""
    cfg = plan.cfg
    shards = plan_shards([(j.name, j.out_dtype, j.shape) for j in plan.jobs], plan.shard_size)
    counts = {a: sum(1 for j in plan.jobs if j.action == a) for a in ("merge", "exclude", "copy")}
    lines = [
        f"base:  {cfg.base} -> {plan.base_folder} ({len(plan.base.files)} file(s))",
        f"tuned: {cfg.tuned} -> {plan.tuned_folder} ({plan.tuned.kind})",
        f"merge: density {cfg.density}, scale {cfg.scale}, scope {cfg.scope}; "
        f"{counts['merge']} tensors merged ({plan.merged_numel:,} entries), "
        f"{counts['exclude']} excluded (take {cfg.exclude_takes}), {counts['copy']} non-float copied",
    ]
    for j in plan.jobs:
        if j.action == "exclude":
            lines.append(f"  excluded: {j.name}")
    for name in plan.dropped:
        lines.append(f"  dropped (tied in tuned): {name}")
    lines.append(f"would write {cfg.out} ({plan.out_bytes / 1e9:.3f} GB):")
    files = [s.filename for s in shards] + (
        ["model.safetensors.index.json"] if len(shards) > 1 else []
    )
    files += ["config.json", "merge_record.json", "README.md"]
    files += [f for f in TOKENIZER_FILES if (plan.tokenizer_folder / f).exists()]
    lines += [f"  {f}" for f in files]
    repo = hub.hub_repo() if hub is not None else None
    if repo:
        lines.append(
            f"would upload it to https://huggingface.co/{repo} ({'private' if hub.hub_private_repo else 'public'})"
        )
    return "\n".join(lines)
