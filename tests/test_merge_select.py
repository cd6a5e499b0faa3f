"""Golden tests for the selection math of the magnitude-selective merge (merge.select)."""

from __future__ import annotations

import pytest
import torch

from merge import select


def keys_of(values) -> torch.Tensor:
    return select.magnitude_keys(torch.tensor(values, dtype=torch.float32))


def test_keep_count_matches_mergekit_counting():
    # k = max(1, floor(density * numel)); density >= 1 keeps all; empty keeps none.
    assert select.keep_count(10, 0.25) == 2
    assert select.keep_count(3, 0.25) == 1  # floor(0.75) = 0 -> at least one
    assert select.keep_count(7, 0.5) == 3
    assert select.keep_count(8, 1.0) == 8
    assert select.keep_count(0, 0.5) == 0
    assert select.keep_count(4096, 0.25) == 1024


def test_magnitude_keys_order_like_magnitudes():
    vals = [0.0, -0.0, 1e-40, -1e-3, 2e-3, -0.5, 0.5, 3.0, -1e30]
    keys = keys_of(vals)
    mags = torch.tensor(vals).abs()
    # Same order as the magnitudes, equal keys for equal magnitudes (0.0 and -0.0, 0.5 and -0.5).
    for i in range(len(vals)):
        for j in range(len(vals)):
            assert (keys[i] < keys[j]) == (mags[i] < mags[j])
            assert (keys[i] == keys[j]) == (mags[i] == mags[j])


def test_rank_bucket_golden():
    hist = torch.tensor([5, 0, 3, 2])  # buckets ordered by value, bucket 3 largest
    assert select.rank_bucket(hist, 1) == (3, 1)
    assert select.rank_bucket(hist, 2) == (3, 2)
    assert select.rank_bucket(hist, 3) == (2, 1)
    assert select.rank_bucket(hist, 5) == (2, 3)
    assert select.rank_bucket(hist, 6) == (0, 1)
    assert select.rank_bucket(hist, 10) == (0, 5)
    with pytest.raises(ValueError):
        select.rank_bucket(hist, 11)


def test_topk_mask_golden_with_ties():
    # |x| = [0.5, 2, 1, 1, 1, 0]; the 1s tie: lower index first.
    x = torch.tensor([0.5, -2.0, 1.0, -1.0, 1.0, 0.0])
    assert select.topk_mask(x, 1).tolist() == [False, True, False, False, False, False]
    assert select.topk_mask(x, 2).tolist() == [False, True, True, False, False, False]
    assert select.topk_mask(x, 3).tolist() == [False, True, True, True, False, False]
    assert select.topk_mask(x, 4).tolist() == [False, True, True, True, True, False]
    assert select.topk_mask(x, 5).tolist() == [True, True, True, True, True, False]
    assert select.topk_mask(x, 6).tolist() == [True] * 6
    assert select.topk_mask(x, 0).tolist() == [False] * 6


def test_topk_mask_keeps_shape_and_exact_count():
    x = torch.tensor([[0.1, -0.4], [0.3, -0.2]])
    m = select.topk_mask(x, select.keep_count(4, 0.5))
    assert m.tolist() == [[False, True], [True, False]]


def test_kth_threshold_golden():
    # |x| sorted: 4, 3, 3, 3, 1 -> k=3: threshold 3, keep 2 of the three 3s.
    thr = select.kth_threshold(keys_of([3.0, -1.0, 4.0, -3.0, 3.0]), 3)
    assert thr.value == 3.0 and thr.ties == 2
    thr = select.kth_threshold(keys_of([3.0, -1.0, 4.0, -3.0, 3.0]), 5)
    assert thr.value == 1.0 and thr.ties == 1


def test_global_threshold_streams_over_tensors_with_ties_to_earlier_tensors():
    # Two tensors, one threshold over 6 entries, k = max(1, floor(0.5 * 6)) = 3.
    # |values| in merge order: a = [3, 1, 2], b = [2, 2, 0.5] -> keep 3 (a0), then the
    # 2s tie: a2 first, then b0; b1 is dropped.
    da, db = torch.tensor([3.0, -1.0, 2.0]), torch.tensor([-2.0, 2.0, 0.5])
    a, b = select.magnitude_keys(da), select.magnitude_keys(db)
    k = select.keep_count(6, 0.5)
    high = select.high_histogram(a) + select.high_histogram(b)  # pass 1, one tensor at a time
    thr = select.threshold_from_deltas(high, lambda: iter([da, db]), k)  # pass 2: refine
    assert thr.value == 2.0 and thr.ties == 2
    assert thr == select.kth_threshold(torch.cat([a, b]), k)
    budget = select.TieBudget(thr)
    assert select.threshold_mask(a, budget).tolist() == [True, False, True]
    assert select.threshold_mask(b, budget).tolist() == [True, False, False]
    assert budget.remaining == 0


def test_threshold_mask_splits_ties_across_chunks():
    keys = keys_of([1.0, 1.0, 5.0, 1.0, 1.0, 0.5])
    budget = select.TieBudget(select.Threshold(int(keys[0]), 3))
    m1 = select.threshold_mask(keys[:2], budget)
    m2 = select.threshold_mask(keys[2:], budget)
    assert torch.cat([m1, m2]).tolist() == [True, True, True, True, False, False]


def test_nonfinite_detected_from_histogram():
    assert not select.has_nonfinite(select.high_histogram(keys_of([1.0, 3e38, 0.0])))
    assert select.has_nonfinite(select.high_histogram(keys_of([1.0, float("inf")])))
    assert select.has_nonfinite(select.high_histogram(keys_of([float("nan"), 1.0])))


def test_merge_tensor_golden():
    base = torch.tensor([1.0, 1.0, -2.0])
    delta = torch.tensor([0.5, -0.1, 1.0])
    mask = torch.tensor([True, False, True])
    out = select.merge_tensor(base, delta, mask, 0.7)
    torch.testing.assert_close(out, torch.tensor([1.35, 1.0, -1.3]), rtol=0, atol=1e-7)


def test_bucket_split_kernels_equal_plain_torch():
    """The fast kernels of the write pass give what the plain expressions give."""
    g = torch.Generator().manual_seed(0)
    d = torch.randn(10_000, generator=g) * 1e-3
    d[::7] = 0.0
    d[1::2] = -d[::2]  # equal magnitudes of both signs
    out = torch.empty(d.numel(), dtype=torch.int16)
    buckets = select.magnitude_buckets(d, out=out)
    assert buckets is out and torch.equal(out, select.magnitude_keys(d) >> 16)
    bucket = int(torch.median(buckets))
    mask = torch.full((d.numel(),), 7.0)
    select.above_bucket(buckets, bucket, out=mask)
    assert torch.equal(mask, (buckets > bucket).float())
    assert torch.equal(
        select.bucket_positions(buckets, bucket), (buckets == bucket).nonzero()[:, 0]
    )
    assert select.bucket_positions(buckets, 0x7FFF).numel() == 0


def test_merge_tensor_float_mask_in_place_is_bit_identical():
    # a product by exactly 0.0 or 1.0 rounds like the bool mask, -0.0 and all
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4096, generator=g).bfloat16().float()
    base[:8] = -0.0
    delta = torch.randn(4096, generator=g) * 1e-3
    delta[:4] = torch.tensor([1e-3, -1e-3, 0.0, -0.0])
    mask = torch.rand(4096, generator=g) > 0.5
    want = select.merge_tensor(base, delta, mask, 0.7)
    got = base.clone()
    select.merge_tensor(got, delta, mask.float(), 0.7, out=got)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("seed", range(6))
def test_topk_mask_equals_stable_sort_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 5000, (1,), generator=g))
    if seed % 2:  # coarse values: many ties
        x = torch.randint(-6, 7, (n,), generator=g).float() * 0.125
    else:
        x = torch.randn(n, generator=g) * 10 ** float(torch.randint(-8, 3, (1,), generator=g))
    k = select.keep_count(n, float(torch.rand(1, generator=g)))
    ref = torch.zeros(n, dtype=torch.bool)
    ref[torch.sort(x.abs(), descending=True, stable=True).indices[:k]] = True
    got = select.topk_mask(x, k)
    assert int(got.sum()) == k
    assert torch.equal(got, ref)
