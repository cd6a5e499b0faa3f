"""Streaming the two inputs of a merge through memory that is allocated once.

Tensors are read one at a time in the plan's order, the next one on a background thread,
into two alternating read slots; their float32 chunks are computed into one `Workspace`.
Why reuse: a fresh buffer per tensor or chunk costs a page fault per 4 KiB page (glibc
hands big freed blocks back to the system and takes new ones from it, the kernel zeroes
every page), which was about half of the merge's CPU time before. Merged tensors larger
than a slot (embeddings) are read chunk by chunk, so memory depends on neither the depth
nor the largest tensor (but for the output of such a tensor, computed whole).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from merge import select
from merge.checkpoint import LoraDeltas, TensorInfo, read_entries, read_tensor
from merge.plan import Job, MergePlan
from merge.slices import Slices


@dataclass
class Pair:
    """Inputs of one tensor: raw base, raw tuned (None = same as base), extra float32 delta.

    The base or tuned side of a merged tensor larger than a read slot (an embedding) is
    not read here but left as its `TensorInfo`: `Workspace.fill` reads it chunk by chunk,
    so no memory is allocated for it."""

    base: torch.Tensor | TensorInfo
    tuned: torch.Tensor | TensorInfo | None
    extra: torch.Tensor | None


def slot_bytes() -> int:
    """Size of a read buffer (and of a writer's lent buffer): one chunk of float32."""
    return 4 * select.CHUNK


class ReadSlot:
    """Two byte buffers (base, tuned) that one tensor pair is read into."""

    def __init__(self):
        self.buffers: list[torch.Tensor] | None = None

    def get(self) -> list[torch.Tensor]:
        if self.buffers is None:  # allocated on first use: a dry path costs nothing
            self.buffers = [torch.empty(slot_bytes(), dtype=torch.uint8) for _ in range(2)]
        return self.buffers


def _read(info: TensorInfo, buffer: torch.Tensor | None, defer: bool):
    if defer and info.end - info.start > slot_bytes():
        return info  # read chunk by chunk when merged
    return read_tensor(info, buffer)


def load_pair(plan: MergePlan, job: Job, slot: ReadSlot | None = None) -> Pair:
    bufs = slot.get() if slot is not None else [None, None]
    defer = slot is not None and job.action == "merge"  # excluded tensors are taken whole
    tuned, extra = plan.tuned, None
    if isinstance(tuned, LoraDeltas):
        extra = tuned.lora_delta(job.name)
        if extra is not None:  # (B @ A).T: flat chunks are then views, not copies
            extra = extra.contiguous()
        t_info = tuned.full.get(job.name)  # else the tuned value is the base's plus extra
    else:
        t_info = tuned.tensors[job.name]
    base = _read(plan.base.tensors[job.base_name], bufs[0], defer)
    return Pair(base, None if t_info is None else _read(t_info, bufs[1], defer), extra)


def prefetched(
    plan: MergePlan, jobs: list[Job], slots: tuple[ReadSlot, ReadSlot] | None = None
) -> Iterator[tuple[Job, Pair]]:
    """Yield ``(job, pair)`` while the next pair is read on a background thread.

    Pairs alternate between two read slots (``slots``, e.g. a `Workspace`'s, kept from
    one pass to the next): a pair's memory is reused for the one after next, so the
    caller must be done with it (and hand the writer a copy) before asking for the next
    pair; one pass at a time."""
    slots = slots or (ReadSlot(), ReadSlot())
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(load_pair, plan, jobs[0], slots[0]) if jobs else None
        for i, job in enumerate(jobs):
            pair = nxt.result()
            if i + 1 < len(jobs):
                nxt = pool.submit(load_pair, plan, jobs[i + 1], slots[(i + 1) % 2])
            yield job, pair


class Workspace:
    """float32 base and delta, and the delta's magnitude buckets, of one chunk (at most
    ``select.CHUNK`` entries), plus a float32 mask, the raw bytes of a chunk of a tensor
    read chunk by chunk, and the read slots; allocated once per merge."""

    def __init__(self, device: str):
        n = select.CHUNK
        self.base = torch.empty(n, dtype=torch.float32, device=device)
        self.delta = torch.empty(n, dtype=torch.float32, device=device)
        self.buckets = torch.empty(n, dtype=torch.int16, device=device)
        self.mask = torch.empty(n, dtype=torch.float32, device=device)
        # 8 bytes per entry covers every dtype; pages never written take no memory
        self.raw = [torch.empty(8 * n, dtype=torch.uint8) for _ in range(2)]
        self.slots = (ReadSlot(), ReadSlot())  # for `prefetched`, one pass after another

    def _source(self, x, start: int, end: int, side: int):
        """``get(a, c)``: entries ``[start + a, start + c)`` of a pair's side, flat."""
        if x is None:
            return None
        if isinstance(x, TensorInfo):
            raw, size = self.raw[side], torch.empty((), dtype=x.dtype).element_size()
            return lambda a, c: read_entries(x, start + a, start + c, raw[a * size :])
        flat = x.reshape(-1)[start:end]
        return lambda a, c: flat[a:c]

    def fill(
        self, pair: Pair, start: int, end: int, slices: Slices, histogram: bool = False
    ) -> torch.Tensor | None:
        """Entries ``[start, end)`` of a pair into the workspace: base and delta in
        float32 (``delta = tuned - base (+ extra)``) and the delta's magnitude buckets;
        returns their high histogram when asked. Views of the results: `chunk`."""
        n = end - start
        b, d, bk = self.base[:n], self.delta[:n], self.buckets[:n]
        get_b = self._source(pair.base, start, end, 0)
        get_t = self._source(pair.tuned, start, end, 1)
        flat_x = None if pair.extra is None else pair.extra.reshape(-1)[start:end]

        def work(a: int, c: int) -> torch.Tensor | None:
            b[a:c].copy_(get_b(a, c))  # to float32, exact
            if get_t is not None:
                d[a:c].copy_(get_t(a, c))
                d[a:c].sub_(b[a:c])
            else:
                d[a:c].zero_()
            if flat_x is not None:
                d[a:c].add_(flat_x[a:c].to(d.device))
            select.magnitude_buckets(d[a:c], out=bk[a:c])
            return select.bucket_histogram(bk[a:c]) if histogram else None

        parts = slices.run(work, n)
        if not histogram:
            return None
        return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)

    def chunk(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(delta, base, buckets)`` of the chunk last filled, ``n`` entries long."""
        return self.delta[:n], self.base[:n], self.buckets[:n]
