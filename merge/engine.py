"""The streaming merge engine: tensor-scope and global-scope magnitude selection.

Tensors are read one at a time in the plan's order (the next one on a background thread),
processed in float32 chunks of `merge.select.CHUNK` entries, and handed to the sharded
writer, so a few tensors are in memory at once whatever the model's size. The selection
math itself is `merge.select`; this module streams the checkpoint through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from artifacts.errors import ShortcotError
from merge import select
from merge.checkpoint import LoraDeltas
from merge.plan import Job, MergePlan
from merge.writer import ShardedWriter


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
            threshold = select.threshold_from_deltas(hist, lambda: (c[2] for c in looks()), k)
            budget = select.TieBudget(threshold)
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
    if not use_pending:  # an extra pass over the merged tensors for the exact threshold

        def deltas():
            for job, pair in _prefetched(plan, merged):
                for _, _, d, _ in _chunks(pair, job.numel, dev):
                    yield d

        budget = select.TieBudget(select.threshold_from_deltas(hist, deltas, k))
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
