"""Exact magnitude selection: which entries of a delta to keep (pure functions on tensors).

DLER (arXiv 2510.15110) section 4.6, spec in docs/algorithms.md §2:

    D = W_tuned - W_base            (float32)
    keep = the top `density` fraction of |D|
    W_merged = W_base + scale * (D * keep)

"Top fraction" is made exact here: k = max(1, floor(density * numel)) entries are kept,
counted as mergekit's ``sparsify.magnitude`` counts them, and ties in |D| at the k-th
value are broken deterministically: the entry that comes first (lower flat index; in
global scope, earlier tensor in the merge order, then lower flat index) wins.
mergekit's full ``argsort`` leaves ties to the sort implementation.

How the k-th largest value is found (radix select on float bits). A non-negative
float32 compared as its int32 bit pattern orders the same way as the float, so |D| is
viewed as int32 "keys" (no copy). A histogram of the high 16 bits of the keys (sign,
exponent and 7 mantissa bits: at most 32768 buckets, each under 1% of a typical tensor)
tells, with exact counts, which bucket holds the k-th largest key and how many entries
lie above it. Entries above that bucket are kept, entries below are dropped, and the
few inside it are decided exactly, either

* by setting them aside (position, key, value if kept) while the output is written and
  keeping the ``need`` largest with a stable sort (`above_bucket`, `bucket_positions`,
  `choose_pending`):
  one histogram pass plus the write pass; or
* when the bucket is too big to set aside (e.g. a tensor whose deltas are all zero), by
  a second histogram over the low 16 bits of the keys inside the bucket, which gives the
  exact k-th key (`low_histogram`, `Threshold`) applied in the write pass with a shared
  tie budget (`threshold_mask`).

Only counts and the set-aside bucket travel between passes, so global scope streams the
checkpoint and never holds all deltas. This replaces mergekit's O(n log n) argsort with
O(n) counting (``torch.kthvalue`` is also O(n) but slower on CPU and cannot stream).
NaN and inf land in buckets >= 0x7F80, which makes the non-finite check free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

HIGH_BUCKETS = 1 << 15  # high 16 bits of a non-negative float32: sign bit is 0
LOW_BUCKETS = 1 << 16
NONFINITE_BUCKET = 0x7F80  # high 16 bits of +inf; NaNs are above it
CHUNK = 1 << 22  # elements per chunk for elementwise work (16 MB of float32)
PENDING_LIMIT = 1 << 23  # most threshold-bucket entries held in memory (~150 MB) before refining


def keep_count(numel: int, density: float) -> int:
    """How many entries of ``numel`` a ``density`` keeps: ``max(1, floor(density * numel))``.

    Exactly mergekit 0.1.5 ``sparsify.magnitude``: a positive density keeps at least one
    entry of a non-empty tensor, and density >= 1 keeps everything.

    >>> keep_count(10, 0.25), keep_count(3, 0.25), keep_count(8, 1.0), keep_count(0, 0.5)
    (2, 1, 8, 0)
    """
    if numel <= 0:
        return 0
    if density >= 1:
        return numel
    return max(1, int(density * numel))


def magnitude_keys(delta: torch.Tensor) -> torch.Tensor:
    """int32 keys of |delta| (float32) whose integer order is the magnitude order.

    Returns a flat tensor. ``delta`` must be float32 (the computation dtype of the merge).
    """
    if delta.dtype != torch.float32:
        raise TypeError(f"magnitude_keys expects float32, got {delta.dtype}")
    return delta.abs().reshape(-1).view(torch.int32)


def magnitude_buckets(delta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """High 16 bits of the keys of |delta| (int16, flat), computed without the full keys:
    the high half of each little-endian float32 with its sign bit cleared. Same values
    as ``magnitude_keys(delta) >> 16`` at half the memory traffic. ``out``: an int16
    buffer of ``delta.numel()`` entries to write them into."""
    if delta.dtype != torch.float32:
        raise TypeError(f"magnitude_buckets expects float32, got {delta.dtype}")
    return torch.bitwise_and(delta.reshape(-1).view(torch.int16)[1::2], 0x7FFF, out=out)


def bucket_histogram(buckets: torch.Tensor) -> torch.Tensor:
    """Counts per high bucket (int64, length 32768) of `magnitude_buckets` output."""
    return torch.bincount(buckets, minlength=HIGH_BUCKETS)[:HIGH_BUCKETS]


def keys_at(delta: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`magnitude_keys` of a few entries of a float32 delta (flat positions)."""
    return delta.reshape(-1).view(torch.int32).index_select(0, positions) & 0x7FFFFFFF


def high_histogram(keys: torch.Tensor) -> torch.Tensor:
    """Counts of keys per high-16-bit bucket (int64, length 32768)."""
    return torch.bincount((keys >> 16).reshape(-1), minlength=HIGH_BUCKETS)[:HIGH_BUCKETS]


def low_histogram(keys: torch.Tensor, bucket: int) -> torch.Tensor:
    """Counts of the low 16 bits of the keys that fall in high ``bucket`` (int64, 65536)."""
    inside = keys[(keys >> 16) == bucket] & 0xFFFF
    return torch.bincount(inside, minlength=LOW_BUCKETS)


def has_nonfinite(high_hist: torch.Tensor) -> bool:
    """True when a high histogram counted inf or NaN magnitudes."""
    return bool(high_hist[NONFINITE_BUCKET:].sum() > 0)


def rank_bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket that holds the k-th largest entry, and how many of its entries are kept.

    ``hist[i]`` counts entries in bucket i, buckets ordered by value. Returns ``(b, need)``
    with ``count(bucket > b) < k <= count(bucket >= b)`` and ``need = k - count(bucket > b)``
    (1 <= need <= hist[b]).

    >>> rank_bucket(torch.tensor([5, 0, 3, 2]), 4)   # 2 in bucket 3, then 2 of the 3 in bucket 2
    (2, 2)
    """
    total = int(hist.sum())
    if not 1 <= k <= total:
        raise ValueError(f"k={k} must be in [1, {total}]")
    at_or_above = hist.flip(0).cumsum(0).flip(0)  # at_or_above[i] = count(bucket >= i)
    b = int((at_or_above >= k).nonzero().max())
    above = int(at_or_above[b + 1]) if b + 1 < hist.numel() else 0
    return b, k - above


@dataclass(frozen=True)
class Threshold:
    """Keep keys > ``key``, plus the first ``ties`` keys equal to ``key`` (in order)."""

    key: int
    ties: int

    @property
    def value(self) -> float:
        """The threshold magnitude as a float."""
        return torch.tensor([self.key], dtype=torch.int32).view(torch.float32).item()


def threshold_from_histograms(
    high: torch.Tensor, low_of: Callable[[int], torch.Tensor], k: int
) -> Threshold:
    """Exact k-th largest key from a high histogram and a function giving the low
    histogram of one high bucket (which lets global scope compute it in a second pass)."""
    b, need = rank_bucket(high, k)
    lo, ties = rank_bucket(low_of(b), need)
    return Threshold((b << 16) | lo, ties)


def threshold_from_deltas(
    high: torch.Tensor, deltas: Callable[[], Iterable[torch.Tensor]], k: int
) -> Threshold:
    """Exact threshold for keeping the ``k`` largest |delta| of a streamed delta, given its
    high histogram ``high``: ``deltas()`` yields its float32 chunks once more, in order,
    and their low histogram inside the k-th bucket gives the exact key (the refinement
    used when the bucket is too large to set aside, in both scopes)."""

    def low_of(bucket: int) -> torch.Tensor:
        low = torch.zeros(LOW_BUCKETS, dtype=torch.int64, device=high.device)
        for d in deltas():
            low += low_histogram(magnitude_keys(d), bucket)
        return low

    return threshold_from_histograms(high, low_of, k)


def kth_threshold(keys: torch.Tensor, k: int) -> Threshold:
    """Exact threshold for keeping the ``k`` largest of ``keys`` (one tensor in memory)."""
    return threshold_from_histograms(high_histogram(keys), lambda b: low_histogram(keys, b), k)


class TieBudget:
    """How many keys equal to the threshold may still be kept; shared across chunks and,
    in global scope, across tensors, so that earlier entries win ties."""

    def __init__(self, threshold: Threshold):
        self.threshold = threshold
        self.remaining = threshold.ties


def threshold_mask(keys: torch.Tensor, budget: TieBudget) -> torch.Tensor:
    """Boolean keep-mask of ``keys`` (flat) for a threshold, consuming the tie budget in
    index order. Call on consecutive chunks in order to get the deterministic tie rule."""
    t = budget.threshold.key
    mask = keys > t
    if budget.remaining > 0:
        eq = keys == t
        n_eq = int(eq.sum())
        if n_eq <= budget.remaining:
            mask |= eq
            budget.remaining -= n_eq
        elif n_eq:
            mask |= eq & (eq.cumsum(0) <= budget.remaining)
            budget.remaining = 0
    return mask


def above_bucket(buckets: torch.Tensor, bucket: int, out: torch.Tensor) -> torch.Tensor:
    """``buckets > bucket`` as 0.0/1.0 in ``out`` (float32): the entries kept whatever the
    exact threshold (those inside ``bucket`` are decided by `choose_pending`).

    A float mask because `merge_tensor` multiplies by it: a bool mask is converted entry by
    entry inside ``addcmul`` (3x slower), and a product by exactly 0 or 1 rounds the same
    either way. On CPU numpy compares int16 about 10x faster than torch."""
    if buckets.device.type == "cpu":
        np.greater(buckets.numpy(), bucket, out=out.numpy())
        return out
    return torch.gt(buckets, bucket, out=out)


def bucket_positions(buckets: torch.Tensor, bucket: int) -> torch.Tensor:
    """Flat positions (int64, ascending) of the entries inside ``bucket``: the few set
    aside for `choose_pending`. (numpy's nonzero is 3x faster than torch's on CPU.)"""
    if buckets.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(buckets.numpy() == bucket))
    return (buckets == bucket).nonzero().squeeze(1)


def choose_pending(keys: torch.Tensor, need: int) -> torch.Tensor:
    """Indices of the ``need`` largest of ``keys`` (given in merge order); equal keys go to
    the earlier entry (stable sort), which is the deterministic tie rule."""
    return torch.sort(keys, descending=True, stable=True).indices[:need]


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask (same shape) of the ``k`` largest ``|scores|``; ties go to the lower flat index.

    ``scores`` is float32 (a delta); the reference semantics are a stable descending sort
    of |scores| keeping the first k.
    """
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    keys = magnitude_keys(scores)
    if k >= keys.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    return threshold_mask(keys, TieBudget(kth_threshold(keys, k))).reshape(scores.shape)


def merge_tensor(
    base: torch.Tensor,
    delta: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``base + scale * (delta * mask)`` in float32 (DLER section 4.6); ``mask`` is bool or
    0.0/1.0 floats, ``out`` an optional float32 buffer (it may be ``base`` itself).

    Rounded exactly like ``base + (delta * mask) * scale``, the operation order of
    mergekit's ties with one model, so both give bit-identical float32. On CPU this is one
    fused ``addcmul`` (no FMA there: the product is rounded before the sum; the mergekit
    equality test guards it); elsewhere the three plain operations, since GPU kernels
    may fuse the multiply-add into one rounding.
    """
    base = base.float()
    if base.device.type == "cpu":
        return torch.addcmul(base, delta, mask, value=scale, out=out)
    if out is None:
        return base + (delta * mask) * scale
    return torch.add(base, (delta * mask) * scale, out=out)
