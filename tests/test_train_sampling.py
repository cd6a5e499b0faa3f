"""Dynamic sampling: filtering, refilling across rounds, the cap, and batch re-padding."""

from __future__ import annotations

import torch

from train.sampling import concat_batches, fill_batch, informative_groups


def _round(rewards, width, tag):
    """A fake TRL batch: n samples, prompt/completion widths differ per round."""
    n = len(rewards)
    return {
        "prompt_ids": torch.full((n, width), tag),
        "prompt_mask": torch.ones(n, width, dtype=torch.long),
        "completion_ids": torch.full((n, width + 1), tag),
        "completion_mask": torch.ones(n, width + 1, dtype=torch.long),
        "advantages": torch.zeros(n),
        "tag": torch.arange(n) + 100 * tag,
        "num_items_in_batch": torch.tensor(99),
    }, torch.tensor(rewards, dtype=torch.float)


def test_informative_groups():
    assert informative_groups(torch.tensor([0.0, 0.0, 1.0, 0.0, 1.5, 1.5]), 2).tolist() == [
        False,
        True,
        False,
    ]


def test_concat_pads_prompts_left_completions_right():
    a, _ = _round([0, 1], 2, 1)
    b, _ = _round([0, 1], 3, 2)
    out = concat_batches([a, b], pad_token_id=7)
    assert out["prompt_ids"].shape == (4, 3)
    assert out["prompt_ids"][0].tolist() == [7, 1, 1]  # left padded with the pad id
    assert out["prompt_mask"][0].tolist() == [0, 1, 1]
    assert out["completion_ids"][0].tolist() == [1, 1, 1, 7]  # right padded
    assert out["completion_mask"][0].tolist() == [1, 1, 1, 0]
    assert out["num_items_in_batch"].item() == 99


def test_refills_until_full():
    rounds = {
        0: _round([1, 1, 0, 1], 2, 1),
        1: _round([0, 0, 1, 0], 3, 2),
        2: _round([0, 1, 0, 1], 2, 3),
    }
    calls = []

    def generate(r):
        calls.append(r)
        return rounds[r]

    batch, valid, stats = fill_batch(generate, group_size=2, target_groups=2, max_extra_rounds=5)
    assert calls == [0, 1]  # the second round filled the batch
    assert batch["tag"].tolist() == [102, 103, 202, 203]  # kept groups, in order
    assert valid.tolist() == [True] * 4
    assert (stats.rounds, stats.generated_groups, stats.filtered_groups, stats.padded_groups) == (
        2,
        4,
        2,
        0,
    )
    assert stats.filtered_fraction == 0.5
    assert batch["completion_ids"].shape == (4, 4)


def test_surplus_is_cut_to_batch_size():
    batch, valid, stats = fill_batch(lambda r: _round([0, 1, 1, 0, 0, 1], 2, 1), 2, 3, 0)
    assert batch["tag"].tolist() == [100, 101, 102, 103, 104, 105]
    batch, valid, stats = fill_batch(lambda r: _round([0, 1, 0, 0, 1, 0, 0, 1], 2, r + 1), 2, 4, 1)
    # 3 informative per round: round 0 gives 3, round 1 gives 3 more -> cut to 4 groups
    assert batch["tag"].tolist() == [100, 101, 104, 105, 106, 107, 200, 201]
    assert stats.rounds == 2 and valid.all()


def test_cap_pads_with_invalid_groups():
    batch, valid, stats = fill_batch(
        lambda r: _round([1, 1, 0, 1], 2, r + 1), 2, 2, max_extra_rounds=0
    )
    assert stats.rounds == 1 and stats.padded_groups == 1
    assert batch["tag"].tolist() == [102, 103, 100, 101]
    assert valid.tolist() == [True, True, False, False]


def test_rounds_continue_while_any_process_needs_more():
    calls = []

    def generate(r):
        calls.append(r)
        return _round([0, 1, 0, 1], 2, r + 1)

    # this process is full after round 0, but another process is not until round 2
    answers = iter([True, True, False])
    fill_batch(generate, 2, 2, 5, any_process=lambda need: next(answers))
    assert calls == [0, 1, 2]
