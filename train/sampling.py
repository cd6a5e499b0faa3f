"""Dynamic sampling (DAPO, arXiv 2503.14476, section 3.2; DLER section 3.4, docs/algorithms.md
§1.4): drop every prompt whose G rollouts all have the same reward (its
group-relative advantage is zero, so it only dilutes the batch), and generate more prompts
until the batch holds the wanted number of informative groups.

TRL 1.16 does not support it (its docs say so), so this module holds the pieces as plain
functions on the batch dictionaries that ``GRPOTrainer._generate_and_score_completions``
returns: `informative_groups` (the filter), `concat_batches` / `take` (assembling a batch
from several generation rounds, re-padding the token tensors) and `fill_batch` (the loop,
with a cap on extra rounds). `train.trainer` wires them into TRL.

When the cap is reached before the batch is full (DLER's veRL code raises an error then),
the batch is topped up with filtered groups marked invalid: the trainer gives them
advantage 0 and leaves them out of the advantage statistics, so they change nothing but
the token-mean denominator, and training does not stop on a hard data set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def informative_groups(rewards: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """(num_groups,) bool: True for groups whose rewards are not all equal.

    >>> informative_groups(torch.tensor([1., 1., 0., 1., 0., 0.]), 2).tolist()
    [False, True, False]
    """
    grouped = rewards.view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) > tol


def _pad_to(x: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    extra = width - x.size(1)
    if extra <= 0:
        return x
    pad = x.new_full((x.size(0), extra, *x.shape[2:]), value)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def concat_batches(batches: list[dict], pad_token_id: int = 0) -> dict:
    """Concatenate batch dicts along the sample dimension.

    2-D (and wider) tensors are padded to the widest batch: keys starting with ``prompt`` on
    the left (TRL left-pads prompts), all others on the right; ``*_ids`` keys are padded with
    ``pad_token_id``, the rest with 0. 1-D tensors and lists are concatenated; scalars and
    anything else are taken from the first batch (the caller recomputes batch-level
    scalars such as ``num_items_in_batch``).
    """
    if len(batches) == 1:
        return dict(batches[0])
    out = {}
    for key, first in batches[0].items():
        values = [b[key] for b in batches]
        if isinstance(first, torch.Tensor) and first.dim() >= 2:
            width = max(v.size(1) for v in values)
            fill = pad_token_id if key.endswith("_ids") else 0
            out[key] = torch.cat(
                [_pad_to(v, width, fill, key.startswith("prompt")) for v in values], dim=0
            )
        elif isinstance(first, torch.Tensor) and first.dim() == 1:
            out[key] = torch.cat(values, dim=0)
        elif isinstance(first, list):
            out[key] = [x for v in values for x in v]
        else:
            out[key] = first
    return out


def take(batch: dict, index: torch.Tensor, num_samples: int) -> dict:
    """Select samples ``index`` from every per-sample entry (tensors or lists whose first
    dimension is ``num_samples``); other entries are kept as they are."""
    out = {}
    for key, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.size(0) == num_samples:
            out[key] = v[index.to(v.device)]
        elif isinstance(v, list) and len(v) == num_samples:
            out[key] = [v[i] for i in index.tolist()]
        else:
            out[key] = v
    return out


@dataclass
class FillStats:
    """What dynamic sampling did for one batch (logged by the trainer)."""

    rounds: int  # generation rounds used (1 = no extra round)
    generated_groups: int
    filtered_groups: int  # groups dropped because all their rewards were equal
    padded_groups: int  # filtered groups put back (marked invalid) because the cap was hit

    @property
    def filtered_fraction(self) -> float:
        return self.filtered_groups / max(1, self.generated_groups)


def fill_batch(
    generate: Callable[[int], tuple[dict, torch.Tensor]],
    group_size: int,
    target_groups: int,
    max_extra_rounds: int,
    pad_token_id: int = 0,
    any_process: Callable[[bool], bool] = bool,
) -> tuple[dict, torch.Tensor, FillStats]:
    """Generate rounds until ``target_groups`` informative groups are collected.

    ``generate(round)`` returns a batch dict (whole groups of ``group_size`` consecutive
    samples) and its (N,) rewards. Round 0 is the ordinary batch; up to
    ``max_extra_rounds`` more rounds follow while some process still lacks groups
    (``any_process`` turns the local "need more" into the global answer so that every
    process runs the same number of rounds and no collective operation hangs).

    Returns the batch of exactly ``target_groups`` groups (informative ones first), a (N,)
    bool ``valid`` mask (False for filtered groups used as padding), and `FillStats`.
    """
    kept, dropped = [], []
    generated = filtered = 0
    rounds = 0
    n_kept = 0
    while True:
        batch, rewards = generate(rounds)
        rounds += 1
        n = rewards.numel()
        mask = informative_groups(rewards.detach().cpu(), group_size)
        generated += mask.numel()
        filtered += int((~mask).sum())
        sample_mask = mask.repeat_interleave(group_size)
        idx_keep = torch.nonzero(sample_mask).flatten()
        idx_drop = torch.nonzero(~sample_mask).flatten()
        if idx_keep.numel():
            kept.append((take(batch, idx_keep, n), rewards[idx_keep]))
            n_kept += idx_keep.numel() // group_size
        if idx_drop.numel():
            dropped.append((take(batch, idx_drop, n), rewards[idx_drop]))
        need_more = n_kept < target_groups
        if rounds > max_extra_rounds or not any_process(need_more):
            break
    parts = list(kept)
    padded = 0
    if n_kept < target_groups:
        padded = target_groups - n_kept
        parts += dropped
    batches = [p[0] for p in parts]
    merged = concat_batches(batches, pad_token_id)
    valid = torch.cat(
        [torch.ones(k[1].numel(), dtype=torch.bool) for k in kept]
        + ([torch.zeros(d[1].numel(), dtype=torch.bool) for d in dropped] if padded else [])
    )
    total = target_groups * group_size
    index = torch.arange(total)
    merged = take(merged, index, valid.numel())
    return merged, valid[:total], FillStats(rounds, generated, filtered, padded)
