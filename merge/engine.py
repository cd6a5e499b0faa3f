"""The streaming merge engine: tensor-scope and global-scope magnitude selection.

Tensors are read one at a time in the plan's order (the next one on a background thread),
processed in float32 chunks of `merge.select.CHUNK` entries in buffers allocated once
(`merge.stream`), each chunk split across threads (`merge.slices`), and handed to the
sharded writer, so a few tensors are in memory at once whatever the model's size. The
selection math itself is `merge.select`; this module streams the checkpoint through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from artifacts.errors import ShortcotError
from merge import select
from merge.plan import Job, MergePlan
from merge.slices import Slices, available_threads
from merge.stream import Pair, Workspace, prefetched
from merge.writer import ShardedWriter


def threads_for(plan: MergePlan) -> int:
    """Threads for the arithmetic: ``--threads``, else the cores available (CPU only)."""
    if not plan.cfg.device.startswith("cpu"):
        return 1
    return plan.cfg.threads or available_threads()


def chunk_bounds(numel: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` of a tensor's chunks (one empty chunk for an empty tensor)."""
    return [(s, min(s + select.CHUNK, numel)) for s in range(0, max(numel, 1), select.CHUNK)]


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


def _bucket_chunk(ws, n, bucket, scale, out, offset, pending, job_index, slices, count=False):
    """Merge the chunk in the workspace (``n`` entries) into ``out`` keeping the entries
    above the threshold bucket; the entries inside it go to ``pending`` with the value
    they take if kept. Returns the number of entries kept outright (only when ``count``,
    else 0)."""
    d, b, buckets = ws.chunk(n)
    mask = ws.mask[:n]

    def work(a: int, c: int):
        found = None
        bs, ds, ks, ms = b[a:c], d[a:c], buckets[a:c], mask[a:c]
        pos = select.bucket_positions(ks, bucket)
        if pos.numel():
            # index_select, not d[pos]: advanced indexing is ~100x slower for sparse gathers
            kept_values = (bs.index_select(0, pos) + ds.index_select(0, pos) * scale).to(out.dtype)
            found = (pos + (offset + a), select.keys_at(ds, pos), kept_values)
        select.above_bucket(ks, bucket, out=ms)
        # a sum of 0/1 floats under 2**24 is exact, and 40x faster than count_nonzero
        kept = int(ms.sum()) if count else 0
        select.merge_tensor(bs, ds, ms, scale, out=bs)  # in place: the base is not needed after
        out[a:c].copy_(bs)
        return found, kept

    total = 0
    for found, kept in slices.run(work, n):  # in slice order: ties go to earlier entries
        if found is not None:
            pending.add(job_index, *found)
        total += kept
    return total


def _norm_hist(job: Job, pair: Pair, st: TensorStats, ws: Workspace, slices: Slices):
    """First look at a tensor: its high histogram and delta norm. A tensor of one chunk
    stays in the workspace for the second look."""
    hist = torch.zeros(select.HIGH_BUCKETS, dtype=torch.int64, device=ws.delta.device)
    for s, e in chunk_bounds(job.numel):
        hist += ws.fill(pair, s, e, slices, histogram=True)
        # the whole chunk on one thread, as before: the same norm whatever --threads
        st.sumsq += float(torch.linalg.vector_norm(ws.delta[: e - s])) ** 2
    _check_finite(job.name, hist)
    return hist


def run_tensor_scope(plan: MergePlan, writer: ShardedWriter, bar) -> dict[str, TensorStats]:
    """Per-tensor top-k: exactly k = keep_count(numel, density) entries of every merged
    tensor. Two looks at each tensor (histogram, then merge); a tensor that fits in one
    chunk is computed once and reused, larger ones are recomputed chunk by chunk."""
    cfg = plan.cfg
    ws = Workspace(cfg.device)
    stats = {}
    with Slices(threads_for(plan)) as slices:
        for job, pair in prefetched(plan, plan.jobs, ws.slots):
            st = stats[job.name] = TensorStats(job.name, job.action, job.numel)
            if job.action != "merge":
                writer.write(job.name, _take(plan, job, pair, st, writer))
                bar.update(job.numel)
                continue
            hist = _norm_hist(job, pair, st, ws, slices)
            bounds = chunk_bounds(job.numel)

            def looks(bounds=bounds, pair=pair):
                """``(start, end)`` of each chunk, once it is in the workspace."""
                if len(bounds) == 1:
                    yield bounds[0]  # still there from the first look
                    return
                for s, e in bounds:
                    ws.fill(pair, s, e, slices)
                    yield s, e

            k = select.keep_count(job.numel, cfg.density)
            bucket, need = select.rank_bucket(hist, k)
            out = writer.buffer(job.numel, job.out_dtype)
            if int(hist[bucket]) <= select.PENDING_LIMIT:
                pending = Pending()
                for s, e in looks():
                    _bucket_chunk(ws, e - s, bucket, cfg.scale, out[s:e], s, pending, 0, slices)
                _, pos, _, values = pending.chosen(need)
                out.index_copy_(0, pos, values.to(job.out_dtype))
                st.kept = k  # exactly k by construction
            else:  # a huge bucket (e.g. all-zero deltas): one more look for the exact threshold
                deltas = lambda looks=looks: (ws.chunk(e - s)[0] for s, e in looks())  # noqa: E731
                threshold = select.threshold_from_deltas(hist, deltas, k)
                budget = select.TieBudget(threshold)
                for s, e in looks():
                    d, b, _ = ws.chunk(e - s)
                    mask = select.threshold_mask(select.magnitude_keys(d), budget)
                    st.kept += int(torch.count_nonzero(mask))
                    out[s:e] = _merged_chunk(d, b, mask, cfg.scale, job.out_dtype)
            st.delta_norm = math.sqrt(st.sumsq)
            writer.write(job.name, out.reshape(job.shape))
            del out
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
    cfg = plan.cfg
    ws = Workspace(cfg.device)
    with Slices(threads_for(plan)) as slices:
        return _global_passes(plan, writer, bar, ws, slices)


def _global_passes(plan, writer, bar, ws: Workspace, slices: Slices):
    cfg, dev = plan.cfg, plan.cfg.device
    merged = [j for j in plan.jobs if j.action == "merge"]
    stats = {j.name: TensorStats(j.name, j.action, j.numel) for j in plan.jobs}
    hist = torch.zeros(select.HIGH_BUCKETS, dtype=torch.int64, device=dev)
    for job, pair in prefetched(plan, merged, ws.slots):  # pass 1
        hist += _norm_hist(job, pair, stats[job.name], ws, slices)
        bar.update(job.numel)
    k = select.keep_count(plan.merged_numel, cfg.density)
    bucket, need = select.rank_bucket(hist, k)
    use_pending = int(hist[bucket]) <= select.PENDING_LIMIT
    budget = None
    if not use_pending:  # an extra pass over the merged tensors for the exact threshold

        def deltas():
            for job, pair in prefetched(plan, merged, ws.slots):
                for s, e in chunk_bounds(job.numel):
                    ws.fill(pair, s, e, slices)
                    yield ws.chunk(e - s)[0]

        budget = select.TieBudget(select.threshold_from_deltas(hist, deltas, k))
    pending = Pending()
    for index, (job, pair) in enumerate(prefetched(plan, plan.jobs, ws.slots)):  # pass 2: write
        st = stats[job.name]
        if job.action != "merge":
            writer.write(job.name, _take(plan, job, pair, st, writer))
            bar.update(job.numel)
            continue
        out = writer.buffer(job.numel, job.out_dtype)
        for s, e in chunk_bounds(job.numel):
            ws.fill(pair, s, e, slices)
            if use_pending:
                n = _bucket_chunk(
                    ws, e - s, bucket, cfg.scale, out[s:e], s, pending, index, slices, True
                )
            else:
                d, b, _ = ws.chunk(e - s)
                mask = select.threshold_mask(select.magnitude_keys(d), budget)
                n = int(torch.count_nonzero(mask))
                out[s:e] = _merged_chunk(d, b, mask, cfg.scale, job.out_dtype)
            st.kept += n
        st.delta_norm = math.sqrt(st.sumsq)
        writer.write(job.name, out.reshape(job.shape))
        del out
        bar.update(job.numel)
    writer.close()
    if use_pending:
        jobs, pos, chosen_keys, values = pending.chosen(need)
        thr = select.Threshold(
            int(chosen_keys.min()), int((chosen_keys == chosen_keys.min()).sum())
        )
        # grouped by tensor with one stable sort (a mask per tensor over millions of
        # chosen entries took longer than the sort)
        order = torch.argsort(jobs, stable=True)
        indices, counts = torch.unique_consecutive(jobs[order], return_counts=True)
        for index, group in zip(indices.tolist(), torch.split(order, counts.tolist())):
            job = plan.jobs[index]
            values_of = values.index_select(0, group).to(job.out_dtype)
            writer.patch(job.name, pos.index_select(0, group), values_of)
            stats[job.name].kept += group.numel()
    else:
        thr = budget.threshold
    return stats, thr


def _take(
    plan: MergePlan, job: Job, pair: Pair, st: TensorStats, writer: ShardedWriter
) -> torch.Tensor:
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
    # always a copy: the pair's memory is reused for a later tensor while this one waits
    # to be written
    out = writer.buffer(job.numel, job.out_dtype)
    out.copy_(value.reshape(-1))
    return out.reshape(job.shape)
