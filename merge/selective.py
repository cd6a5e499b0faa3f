"""Magnitude-selective merging (DLER, arXiv 2510.15110, section 4.6; docs/algorithms.md §2).

Merge a concise RL-tuned model back into its base, keeping only its largest updates::

    D = W_tuned - W_base                        (float32)
    W_merged = W_base + scale * (D * top_density(|D|))

    python -m merge.selective --base BASE --tuned TUNED --out OUT [--density 0.25 --scale 0.7]

``--scope tensor`` keeps the top fraction of every tensor (mergekit's ``ties`` with one
model computes the same weights); ``--scope global`` uses one exact magnitude threshold
over all selected tensors (TIES-style). The checkpoint is streamed: a few tensors are in
memory at once, large tensors are processed in chunks, tensors are read ahead and written
on background threads, and global scope makes two passes over the inputs (histogram,
then write; see `merge.select`) instead of holding every delta. In Python: `merge_models(cfg)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from artifacts.cards import hub_id, public_ref, write_model_card
from artifacts.errors import ShortcotError, run_cli
from artifacts.hub import push_folder, resolve_local, revision_of
from artifacts.outdir import (
    atomic_output_dir,
    check_free_space,
    check_output,
    remove_stale_temporaries,
)
from merge import select
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
from merge.writer import ShardedWriter, parse_size, plan_shards

METHOD = "magnitude_selective"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
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
class MergeConfig:
    """Settings of one magnitude-selective merge (every field is also a CLI flag)."""

    base: str
    """Base model: local folder or Hub repo id (safetensors, single file or sharded)."""
    tuned: str
    """Tuned model trained from the base (folder or Hub id), or a PEFT LoRA adapter on the base."""
    out: str
    """Output folder; written atomically, never overwritten without ``force``."""
    density: float = 0.25
    """Fraction of |tuned - base| entries kept, in (0, 1] (DLER: 0.25)."""
    scale: float = 0.7
    """Factor on the kept delta (DLER: 0.7; no 1/density rescale)."""
    scope: Literal["tensor", "global"] = "tensor"
    """``tensor``: top fraction of each tensor; ``global``: one threshold over all selected tensors."""
    exclude: list[str] = field(default_factory=list)
    """Regexes (``re.search`` on tensor names); matching tensors are not merged."""
    exclude_takes: Literal["base", "tuned"] = "base"
    """Which model an excluded tensor is copied from."""
    dtype: str | None = None
    """Output dtype (bfloat16, float16, float32); default: each tensor's dtype in the tuned model."""
    device: str = "cpu"
    """Device for the selection arithmetic (cpu or cuda)."""
    shard_size: str = "5GB"
    """Largest output shard."""
    tokenizer_from: Literal["tuned", "base"] = "tuned"
    """Model whose tokenizer, chat template and generation config are copied."""
    base_revision: str | None = None
    """Hub revision of the base (branch, tag or commit)."""
    tuned_revision: str | None = None
    """Hub revision of the tuned model."""
    push_to_hub: str | None = None
    """Upload the output folder to this Hub repo (created if needed)."""
    private: bool = False
    """Create the Hub repo as private."""
    dry_run: bool = False
    """Check the inputs and print what would be written and uploaded; write nothing."""
    force: bool = False
    """Replace an existing output folder."""
    hash_inputs: bool = False
    """Record the sha256 of every input weight file (reads them once more)."""
    threads: int = 1
    """Intra-op threads for the arithmetic. One by default: the reader and writer threads
    already overlap I/O with it, and on a shared 2-core machine two OpenMP threads made the
    merge 2x slower (they wait for each other); raise it on an idle many-core machine."""


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


# ----------------------------------------------------------------------------- checks


def validate(cfg: MergeConfig) -> list[re.Pattern]:
    """Check the settings that need no file; returns the compiled exclude patterns."""
    if not (isinstance(cfg.density, int | float) and 0 < cfg.density <= 1):
        raise ShortcotError(f"--density {cfg.density} is outside (0, 1]; pass e.g. --density 0.25")
    if not math.isfinite(cfg.scale):
        raise ShortcotError(f"--scale {cfg.scale} is not a finite number; pass e.g. --scale 0.7")
    if cfg.scope not in ("tensor", "global"):
        raise ShortcotError(f"--scope {cfg.scope!r} is not tensor or global")
    if cfg.exclude_takes not in ("base", "tuned"):
        raise ShortcotError(f"--exclude-takes {cfg.exclude_takes!r} is not base or tuned")
    if cfg.tokenizer_from not in ("base", "tuned"):
        raise ShortcotError(f"--tokenizer-from {cfg.tokenizer_from!r} is not base or tuned")
    if cfg.dtype is not None and cfg.dtype not in DTYPES:
        raise ShortcotError(f"--dtype {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ShortcotError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    parse_size(cfg.shard_size)
    if cfg.threads < 1:
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

    out_dtype = DTYPES.get(cfg.dtype) if cfg.dtype else None
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
        out_config["dtype"] = cfg.dtype
        if "torch_dtype" in out_config:
            out_config["torch_dtype"] = cfg.dtype
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


# -------------------------------------------------------------------------- arithmetic


def _libc_trim():
    """``malloc_trim(0)`` from glibc, or a no-op elsewhere.

    Why: tensors of 1-32 MB come from glibc's heap arenas (the reader thread has its own),
    and freed space there is kept by the process; without trimming, peak RSS grows by a
    few hundred MB over a 300M-parameter merge although live memory stays flat. Trimming
    after each tensor keeps peak RSS at live memory for a few milliseconds per call.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return lambda: None


release_memory = _libc_trim()


@dataclass
class Pair:
    """Inputs of one tensor: raw base, raw tuned (None = same as base), extra float32 delta."""

    base: torch.Tensor
    tuned: torch.Tensor | None
    extra: torch.Tensor | None


def load_pair(plan: MergePlan, job: Job) -> Pair:
    base = plan.base.read(job.base_name)
    tuned = plan.tuned
    if isinstance(tuned, LoraDeltas):
        extra = tuned.lora_delta(job.name)
        t = tuned.read_tuned(job.name) if job.name in tuned.full else None
        return Pair(base, t, extra)
    return Pair(base, tuned.read_tuned(job.name), None)


def _chunks(
    pair: Pair, numel: int, device: str
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Yield ``(start, end, delta, base)`` float32 chunks of a tensor's flat entries."""
    flat_b = pair.base.reshape(-1)
    for s in range(0, max(numel, 1), select.CHUNK):
        e = min(s + select.CHUNK, numel)
        b = flat_b[s:e].to(device, torch.float32)
        if pair.tuned is not None:
            d = pair.tuned.reshape(-1)[s:e].to(device, torch.float32)
            d.sub_(b)
        else:
            d = torch.zeros_like(b)
        if pair.extra is not None:
            d.add_(pair.extra.reshape(-1)[s:e].to(device))
        yield s, e, d, b


def _prefetched(plan: MergePlan, jobs: list[Job]) -> Iterator[tuple[Job, Pair]]:
    """Yield ``(job, pair)`` while the next pair is read on a background thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(load_pair, plan, jobs[0]) if jobs else None
        for i, job in enumerate(jobs):
            pair = nxt.result()
            nxt = pool.submit(load_pair, plan, jobs[i + 1]) if i + 1 < len(jobs) else None
            yield job, pair


def _check_finite(name: str, hist: torch.Tensor) -> None:
    if select.has_nonfinite(hist):
        raise ShortcotError(
            f"tensor {name} has inf/NaN in base or tuned; the checkpoints are corrupt, re-download or re-train"
        )


@dataclass
class TensorStats:
    name: str
    action: str
    numel: int
    kept: int = 0
    delta_norm: float | None = None
    sumsq: float = 0.0

    def as_record(self) -> dict:
        return {
            "name": self.name,
            "action": self.action,
            "numel": self.numel,
            "kept": self.kept,
            "kept_fraction": self.kept / self.numel if self.numel else 0.0,
            "delta_norm": self.delta_norm,
        }


def _merged_chunk(
    d: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, scale: float, dtype: torch.dtype
):
    return select.merge_tensor(b, d, mask, scale).to(dtype)


@dataclass
class Pending:
    """Entries inside the threshold bucket, in merge order: which tensor, flat position,
    key, and the output value each would take if kept."""

    job: list[torch.Tensor] = field(default_factory=list)
    pos: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def add(self, job_index, pos, keys, values) -> None:
        self.job.append(torch.full((pos.numel(),), job_index, dtype=torch.int32))
        self.pos.append(pos.cpu())
        self.keys.append(keys.cpu())
        self.values.append(values.cpu().to(torch.float64))  # exact for every float dtype

    def chosen(self, need: int) -> tuple[torch.Tensor, ...]:
        """``(job, pos, keys, values)`` of the ``need`` entries kept (ties to earlier
        entries); values in float64."""
        job, pos, keys, values = (
            torch.cat(x) if len(x) > 1 else x[0]
            for x in (self.job, self.pos, self.keys, self.values)
        )
        idx = select.choose_pending(keys, need)
        return tuple(x.index_select(0, idx) for x in (job, pos, keys, values))


def _bucket_chunk(d, b, buckets, bucket, scale, out, offset, pending, job_index, count=False):
    """Merge one chunk into ``out`` keeping the entries above the threshold bucket; the
    entries inside it go to ``pending`` with the value they take if kept. Returns the
    number of entries kept outright (only when ``count``, else 0)."""
    sure, pos = select.split_at_bucket(buckets, bucket)
    if pos.numel():
        # index_select, not d[pos]: advanced indexing is ~100x slower for sparse gathers
        kept_values = (b.index_select(0, pos) + d.index_select(0, pos) * scale).to(out.dtype)
        pending.add(job_index, pos + offset, select.keys_at(d, pos), kept_values)
    out.copy_(select.merge_tensor(b, d, sure, scale))
    return int(torch.count_nonzero(sure)) if count else 0


def _norm_hist(job: Job, chunks, st: TensorStats, dev: str, cache: bool):
    """First look at a tensor: high histogram and delta norm (and the single chunk, kept
    for reuse when the tensor fits in one chunk)."""
    hist = torch.zeros(select.HIGH_BUCKETS, dtype=torch.int64, device=dev)
    kept_chunk = None
    for s, e, d, b in chunks:
        buckets = select.magnitude_buckets(d)
        hist += select.bucket_histogram(buckets)
        st.sumsq += float(torch.linalg.vector_norm(d)) ** 2
        if cache:
            kept_chunk = (s, e, d, b, buckets)
    _check_finite(job.name, hist)
    return hist, kept_chunk


def run_tensor_scope(plan: MergePlan, writer: ShardedWriter, bar) -> dict[str, TensorStats]:
    """Per-tensor top-k: exactly k = keep_count(numel, density) entries of every merged
    tensor. Two looks at each tensor (histogram, then merge); a tensor that fits in one
    chunk is computed once and reused, larger ones are recomputed chunk by chunk."""
    cfg, dev = plan.cfg, plan.cfg.device
    stats = {}
    for job, pair in _prefetched(plan, plan.jobs):
        st = stats[job.name] = TensorStats(job.name, job.action, job.numel)
        if job.action != "merge":
            writer.write(job.name, _take(plan, job, pair, st))
            bar.update(job.numel)
            continue
        single = job.numel <= select.CHUNK
        hist, cached = _norm_hist(job, _chunks(pair, job.numel, dev), st, dev, single)

        def looks(cached=cached, pair=pair, job=job):
            if cached is not None:
                return [cached]
            chunks = _chunks(pair, job.numel, dev)
            return ((s, e, d, b, select.magnitude_buckets(d)) for s, e, d, b in chunks)

        k = select.keep_count(job.numel, cfg.density)
        bucket, need = select.rank_bucket(hist, k)
        out = torch.empty(job.numel, dtype=job.out_dtype)
        if int(hist[bucket]) <= select.PENDING_LIMIT:
            pending = Pending()
            for s, e, d, b, buckets in looks():
                _bucket_chunk(d, b, buckets, bucket, cfg.scale, out[s:e], s, pending, 0)
            _, pos, _, values = pending.chosen(need)
            out.index_copy_(0, pos, values.to(job.out_dtype))
            st.kept = k  # exactly k by construction
        else:  # a huge bucket (e.g. all-zero deltas): one more look for the exact threshold
            low = torch.zeros(select.LOW_BUCKETS, dtype=torch.int64, device=dev)
            for _, _, d, _, _ in looks():
                low += select.low_histogram(select.magnitude_keys(d), bucket)
            lo, ties = select.rank_bucket(low, need)
            budget = select.TieBudget(select.Threshold((bucket << 16) | lo, ties))
            for s, e, d, b, _ in looks():
                mask = select.threshold_mask(select.magnitude_keys(d), budget)
                st.kept += int(torch.count_nonzero(mask))
                out[s:e] = _merged_chunk(d, b, mask, cfg.scale, job.out_dtype)
        cached = None
        st.delta_norm = math.sqrt(st.sumsq)
        writer.write(job.name, out.reshape(job.shape))
        del out
        release_memory()
        bar.update(job.numel)
    return stats


def run_global_scope(
    plan: MergePlan, writer: ShardedWriter, bar
) -> tuple[dict[str, TensorStats], select.Threshold]:
    """One exact threshold over all merged tensors, streaming.

    Pass 1: high histogram of every merged tensor -> the bucket holding the k-th largest
    |delta|. Pass 2: write, keeping entries above that bucket and setting aside the few
    inside it (position, key, value if kept); then the exact choice among them is made and
    patched into the written shards. If the bucket is too large to set aside (more than
    ``select.PENDING_LIMIT`` entries), an extra pass computes its low histogram and the
    write pass applies the exact threshold instead. Closes ``writer``.
    """
    cfg, dev = plan.cfg, plan.cfg.device
    merged = [j for j in plan.jobs if j.action == "merge"]
    stats = {j.name: TensorStats(j.name, j.action, j.numel) for j in plan.jobs}
    hist = torch.zeros(select.HIGH_BUCKETS, dtype=torch.int64, device=dev)
    for job, pair in _prefetched(plan, merged):  # pass 1
        th, _ = _norm_hist(job, _chunks(pair, job.numel, dev), stats[job.name], dev, False)
        hist += th
        bar.update(job.numel)
    k = select.keep_count(plan.merged_numel, cfg.density)
    bucket, need = select.rank_bucket(hist, k)
    use_pending = int(hist[bucket]) <= select.PENDING_LIMIT
    budget = None
    if not use_pending:
        low = torch.zeros(select.LOW_BUCKETS, dtype=torch.int64, device=dev)
        for job, pair in _prefetched(plan, merged):
            for _, _, d, _ in _chunks(pair, job.numel, dev):
                low += select.low_histogram(select.magnitude_keys(d), bucket)
        lo, ties = select.rank_bucket(low, need)
        budget = select.TieBudget(select.Threshold((bucket << 16) | lo, ties))
    pending = Pending()
    for index, (job, pair) in enumerate(_prefetched(plan, plan.jobs)):  # pass 2: write
        st = stats[job.name]
        if job.action != "merge":
            writer.write(job.name, _take(plan, job, pair, st))
            bar.update(job.numel)
            continue
        out = torch.empty(job.numel, dtype=job.out_dtype)
        for s, e, d, b in _chunks(pair, job.numel, dev):
            if use_pending:
                buckets = select.magnitude_buckets(d)
                n = _bucket_chunk(
                    d, b, buckets, bucket, cfg.scale, out[s:e], s, pending, index, True
                )
            else:
                mask = select.threshold_mask(select.magnitude_keys(d), budget)
                n = int(torch.count_nonzero(mask))
                out[s:e] = _merged_chunk(d, b, mask, cfg.scale, job.out_dtype)
            st.kept += n
        st.delta_norm = math.sqrt(st.sumsq)
        writer.write(job.name, out.reshape(job.shape))
        del out
        release_memory()
        bar.update(job.numel)
    writer.close()
    if use_pending:
        jobs, pos, chosen_keys, values = pending.chosen(need)
        thr = select.Threshold(
            int(chosen_keys.min()), int((chosen_keys == chosen_keys.min()).sum())
        )
        for index in torch.unique(jobs).tolist():
            job = plan.jobs[index]
            sel = jobs == index
            writer.patch(job.name, pos[sel], values[sel].to(job.out_dtype))
            stats[job.name].kept += int(sel.sum())
    else:
        thr = budget.threshold
    return stats, thr


def _take(plan: MergePlan, job: Job, pair: Pair, st: TensorStats) -> torch.Tensor:
    """An excluded (or non-float) tensor, copied from the base or the tuned model."""
    if job.action == "copy" or plan.cfg.exclude_takes == "tuned":
        if pair.tuned is None and pair.extra is None:
            value = pair.base
        elif pair.extra is None:
            value = pair.tuned
        else:  # LoRA: tuned = base + scaling * B @ A
            value = (pair.tuned if pair.tuned is not None else pair.base).float() + pair.extra
        st.kept = job.numel
    else:
        value = pair.base
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ShortcotError(
            f"tensor {job.name} has inf/NaN; the checkpoint is corrupt, re-download or re-train"
        )
    return value.to(job.out_dtype).reshape(job.shape)


# ------------------------------------------------------------------------------ output


def _file_facts(folder: Path, files: list[Path], full_hash: bool) -> list[dict]:
    facts = []
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header_sha = hashlib.sha256(fh.read(n)).hexdigest()
        item = {"file": f.name, "bytes": f.stat().st_size, "header_sha256": header_sha}
        if full_hash:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    h.update(chunk)
            item["sha256"] = h.hexdigest()
        facts.append(item)
    return facts


def _input_record(
    ref: str, folder: Path, revision: str | None, files: list[Path], full_hash: bool
) -> dict:
    return {
        "ref": ref,
        "revision": revision_of(folder) or revision,
        "local": Path(ref).expanduser().exists(),
        "files": _file_facts(folder, files, full_hash),
    }


def parameters(cfg: MergeConfig) -> dict:
    return {
        "method": METHOD,
        "density": cfg.density,
        "scale": cfg.scale,
        "scope": cfg.scope,
        "exclude": list(cfg.exclude),
        "exclude_takes": cfg.exclude_takes,
        "dtype": cfg.dtype,
        "tokenizer_from": cfg.tokenizer_from,
    }


def mergekit_yaml(cfg: MergeConfig) -> str:
    """The mergekit recipe of the same merge (exact for ``--scope tensor`` without excludes)."""
    return (
        f"merge_method: {METHOD}\nbase_model: {cfg.base}\nmodels:\n  - model: {cfg.tuned}\n"
        f"parameters:\n  density: {cfg.density}\n  scale: {cfg.scale}\ndtype: float32\n"
        f"# same weights with mergekit's built-in ties: merge_method: ties, weight: 1.0, "
        f"lambda: {cfg.scale}, normalize: false, rescale: false\n"
    )


def _card(plan: MergePlan, folder: Path, record: dict) -> None:
    cfg = plan.cfg
    # The model tree: the base, and the tuned model when it is a model of its own on the Hub
    # (a LoRA adapter is a delta on the base, not a parent).
    parents = [hub_id(cfg.base), hub_id(cfg.tuned) if plan.tuned.kind != "lora" else None]
    shown = dataclasses.replace(cfg, base=public_ref(cfg.base), tuned=public_ref(cfg.tuned))
    tot = record["totals"]
    summary = (
        f"Magnitude-selective merge (DLER, arXiv 2510.15110, section 4.6) of `{shown.tuned}` into "
        f"`{shown.base}`: `merged = base + {cfg.scale} * (delta * mask)`, keeping the "
        f"{cfg.density:.0%} largest |tuned - base| entries ({cfg.scope} scope). "
        f"{tot['kept']:,} of {tot['merged_numel']:,} merged entries kept "
        f"({tot['kept_fraction']:.4f}). Per-tensor figures are in `merge_record.json`.\n\n"
        f"Equivalent mergekit recipe (with `import merge.mergekit_method`):\n\n```yaml\n{mergekit_yaml(shown)}```"
    )
    write_model_card(
        folder,
        title=f"{Path(shown.tuned).name} merged into {Path(shown.base).name}",
        summary=summary,
        recipe=record["parameters"],
        base_model=[p for p in parents if p] or None,
        base_model_relation="merge",
        tags=["merge", "magnitude-selective-merge", "dler"],
    )


def describe(plan: MergePlan) -> str:
    """What a merge would write (for --dry-run)."""
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
    if cfg.push_to_hub:
        lines.append(
            f"would upload it to https://huggingface.co/{cfg.push_to_hub} ({'private' if cfg.private else 'public'})"
        )
    return "\n".join(lines)


def merge_models(cfg: MergeConfig, hf_api=None) -> Path | None:
    """Run one merge; returns the output folder (None for a dry run).

    ``hf_api`` (an `huggingface_hub.HfApi`) is used for ``push_to_hub``; injectable for tests.
    """
    plan = plan_merge(cfg)
    if cfg.dry_run:
        print(describe(plan))
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        return _run(plan, hf_api)
    finally:
        torch.set_num_threads(threads)


def _run(plan: MergePlan, hf_api) -> Path:
    cfg = plan.cfg
    out = Path(cfg.out)
    t0 = time.perf_counter()
    shards = plan_shards([(j.name, j.out_dtype, j.shape) for j in plan.jobs], plan.shard_size)
    passes = 2 if cfg.scope == "global" else 1
    total = passes * plan.merged_numel + sum(j.numel for j in plan.jobs if j.action != "merge")
    with atomic_output_dir(out, force=cfg.force) as tmp:
        writer = ShardedWriter(tmp, shards)
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
        kept = sum(s.kept for s in stats.values() if s.action == "merge")
        record = {
            "method": METHOD,
            "reference": "DLER, arXiv 2510.15110, section 4.6",
            "parameters": parameters(cfg),
            "inputs": {
                "base": _input_record(
                    cfg.base, plan.base_folder, cfg.base_revision, plan.base.files, cfg.hash_inputs
                ),
                "tuned": _input_record(
                    cfg.tuned,
                    plan.tuned_folder,
                    cfg.tuned_revision,
                    [plan.tuned_folder / "adapter_model.safetensors"]
                    if plan.tuned.kind == "lora"
                    else plan.tuned.ckpt.files,
                    cfg.hash_inputs,
                ),
                "tuned_kind": plan.tuned.kind,
            },
            "threshold": None
            if threshold is None
            else {"magnitude": threshold.value, "ties_kept": threshold.ties},
            "totals": {
                "merged_numel": plan.merged_numel,
                "kept": kept,
                "kept_fraction": kept / plan.merged_numel,
                "tensors": len(plan.jobs),
                "seconds": round(time.perf_counter() - t0, 3),
            },
            "dropped_tied": plan.dropped,
            "tensors": [stats[j.name].as_record() for j in plan.jobs],
        }
        (tmp / "merge_record.json").write_text(json.dumps(record, indent=1) + "\n")
        _card(plan, tmp, record)
    if cfg.push_to_hub:
        url = push_folder(
            out,
            cfg.push_to_hub,
            private=cfg.private,
            api=hf_api,
            commit_message=f"Magnitude-selective merge (density {cfg.density}, scale {cfg.scale})",
        )
        print(f"uploaded to {url}")
    return out


# --------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m merge.selective",
        description=(
            "Magnitude-selective merge (DLER, arXiv 2510.15110, section 4.6): "
            "merged = base + scale * (delta * mask), delta = tuned - base in float32, where mask "
            "keeps the `density` fraction of |delta| with the largest magnitude (exactly "
            "k = max(1, floor(density * n)) entries; ties go to the earlier entry). Streamed "
            "tensor by tensor; written as sharded safetensors with config, tokenizer, chat "
            "template, generation config, model card (README.md) and merge_record.json."
        ),
        epilog=(
            "examples:\n"
            "  python -m merge.selective --base deepseek-ai/DeepSeek-R1-Distill-Qwen-7B \\\n"
            "      --tuned your-org/your-dler-tuned-7b --out runs/merged --density 0.25 --scale 0.7\n"
            "  python -m merge.selective --base B --tuned lora_adapter/ --out O --scope global \\\n"
            "      --exclude embed_tokens --exclude lm_head --dry-run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", required=True, help="base model: local folder or Hub repo id")
    p.add_argument(
        "--tuned",
        required=True,
        help="tuned model trained from the base (folder or Hub id), or a PEFT LoRA adapter "
        "folder trained on the base (its delta is scaling * B @ A, no merged copy is written)",
    )
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument(
        "--density",
        type=float,
        default=0.25,
        help="fraction of |tuned - base| entries kept, in (0, 1] (default 0.25)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=0.7,
        help="factor on the kept delta, no 1/density rescale (default 0.7)",
    )
    p.add_argument(
        "--scope",
        choices=["tensor", "global"],
        default="tensor",
        help="tensor: top fraction of every tensor (the same weights as mergekit ties); "
        "global: one exact threshold over all merged tensors, ties to the tensor stored first "
        "(default tensor)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="REGEX",
        help="tensors whose name matches (re.search) are copied, not merged; repeatable, "
        "e.g. --exclude embed_tokens --exclude 'norm\\.weight$'",
    )
    p.add_argument(
        "--exclude-takes",
        choices=["base", "tuned"],
        default="base",
        help="model that excluded tensors are copied from (default base)",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=None,
        help="output dtype (default: each tensor's dtype in the tuned model)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="device for the selection arithmetic, cpu or cuda (default cpu)",
    )
    p.add_argument(
        "--shard-size", default="5GB", help="largest output shard, e.g. 5GB or 500MB (default 5GB)"
    )
    p.add_argument(
        "--tokenizer-from",
        choices=["tuned", "base"],
        default="tuned",
        help="model whose tokenizer, chat template and generation config are copied (default tuned)",
    )
    p.add_argument(
        "--base-revision", default=None, help="Hub revision (branch, tag, commit) of --base"
    )
    p.add_argument("--tuned-revision", default=None, help="Hub revision of --tuned")
    p.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="upload the output folder to this Hub repo, created if needed",
    )
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the inputs and print what would be written and uploaded; write nothing",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for the arithmetic (default 1; reading and writing run on "
        "their own threads; more helps only on an idle many-core machine)",
    )
    p.add_argument(
        "--hash-inputs",
        action="store_true",
        help="record the sha256 of every input weight file in merge_record.json (reads them "
        "once more; by default the record holds Hub revisions, sizes and header hashes)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> MergeConfig:
    return MergeConfig(**{f: getattr(args, f) for f in MergeConfig.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    out = merge_models(cfg)
    if out is not None:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
