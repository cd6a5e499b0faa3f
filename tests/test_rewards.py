"""Golden tests for train.rewards: every method's formula on hand-worked numbers, and the TRL
reward function on text and conversational completions."""

from __future__ import annotations

import math

import pytest

from artifacts.errors import ShortcotError
from evals.grading import Grade
from train.length_reward import LengthReward, RewardConfig
from train.reward_methods import METHODS, REWARD_METHODS
from train.rewards import (
    arora_zanette_rewards,
    binary_reward,
    da_dler_target,
    has_repetition,
    is_truncated,
    kimi_rewards,
    l1_exact_reward,
    l1_max_reward,
    laser_base_reward,
    laser_de_reward,
    laser_reward,
    truncation_reward,
)

EOS = 2


def test_base_rewards():
    assert binary_reward(Grade(True, "1", True)) == 1.0
    assert binary_reward(Grade(False, "2", True)) == 0.0
    assert laser_base_reward(Grade(True, "1", True)) == 1.0
    assert laser_base_reward(Grade(False, "2", True)) == -0.5
    assert laser_base_reward(Grade(False, None, False)) == -1.0


def test_truncation_from_ids_only():
    assert not is_truncated([7, 8, EOS], [EOS])
    assert is_truncated([7, 8, 9], [EOS])
    # EOS after the limit: cut off at L_T = 2 even though generation went on
    assert is_truncated([7, 8, EOS], [EOS], limit=2)
    assert not is_truncated([7, EOS, 9], [EOS, 99], limit=2)


def test_truncation_reward_paper_and_code():
    assert truncation_reward(1.0, False) == 1.0
    assert truncation_reward(1.0, True) == 0.0
    assert truncation_reward(1.0, True, truncated_factor=0.1) == pytest.approx(0.1)
    assert truncation_reward(0.0, True, truncated_factor=0.1) == 0.0


def test_laser_values():
    # docs/algorithms.md §3.2: 1.5 correct & short, 1.0 correct & long, -0.5 wrong, -1 malformed
    assert laser_reward(1.0, True, 100, 100) == 1.5  # L <= L_T counts as within
    assert laser_reward(1.0, True, 101, 100) == 1.0
    assert laser_reward(-0.5, False, 10, 100) == -0.5
    assert laser_reward(-1.0, False, 10, 100) == -1.0


def test_laser_de_values():
    assert laser_de_reward(1.0, True, 50, 100) == 1.5
    assert laser_de_reward(1.0, True, 150, 100) == 1.0
    assert laser_de_reward(-0.5, False, 50, 100) == -0.5  # wrong and short: no bonus
    assert laser_de_reward(-0.5, False, 150, 100) == 0.0  # wrong and long: exploration bonus
    assert laser_de_reward(-0.5, False, 150, 100, repetitive=True) == -0.5
    assert laser_de_reward(-1.0, False, 150, 100) == -0.5


def test_da_dler_rule():
    assert da_dler_target(4 / 8) == 2000
    assert da_dler_target(3 / 8) == 4000
    assert da_dler_target(1.0, short_target=10, long_target=20) == 10


def test_l1_exact_and_max():
    # 1 - 0.0003 * |700 - 1000| = 1 - 0.09 = 0.91
    assert l1_exact_reward(1.0, 700, 1000) == pytest.approx(0.91)
    assert l1_exact_reward(-0.5, 1300, 1000) == pytest.approx(-0.59)
    # clip(0.01 * (100 - 80) + 0.5, 0, 1) = 0.7 ; (100 - 20) -> 1.3 -> 1 ; (100 - 160) -> -0.1 -> 0
    assert l1_max_reward(True, 80, 100) == pytest.approx(0.7)
    assert l1_max_reward(True, 20, 100) == 1.0
    assert l1_max_reward(True, 160, 100) == 0.0
    assert l1_max_reward(False, 20, 100) == 0.0


def test_kimi_group():
    # lengths 100, 200, 300 -> lam = 0.5, 0, -0.5 ; wrong gets min(0, lam)
    out = kimi_rewards([1.0, 1.0, -0.5], [True, True, False], [100, 200, 300])
    assert out == pytest.approx([1.5, 1.0, -1.0])
    out = kimi_rewards([-0.5, 1.0], [False, True], [100, 300])  # wrong but shortest: min(0, .5) = 0
    assert out == pytest.approx([-0.5, 0.5])
    assert kimi_rewards([1.0, 1.0], [True, True], [5, 5]) == [1.0, 1.0]


def test_arora_zanette_group():
    # correct lengths 100, 300: mean 200, std 100 -> z = -1, +1 ; wrong unchanged
    sig = 1 / (1 + math.exp(-1))  # 0.7311
    out = arora_zanette_rewards([1.0, 1.0, 0.0], [True, True, False], [100, 300, 50], alpha=0.4)
    assert out == pytest.approx([1 - 0.4 * (1 - sig), 1 - 0.4 * sig, 0.0])
    assert arora_zanette_rewards([1.0], [True], [7], alpha=0.2) == pytest.approx([0.9])


def test_repetition_detector():
    assert has_repetition([1, 2, 3] * 3, n=3, repeats=3)
    assert not has_repetition([1, 2, 3] * 2 + [4, 5, 6], n=3, repeats=3)


def _fake_grader(completion, reference):
    ok = f"\\boxed{{{reference}}}" in completion
    fmt = "\\boxed" in completion
    return Grade(ok, reference if ok else None, fmt)


def _call(method, completions, ids, answers, keys=None, **cfg):
    rf = LengthReward(
        RewardConfig(reward_method=method, **cfg), eos_token_ids=[EOS], grader=_fake_grader
    )
    kw = {"id": keys} if keys else {}
    return rf(
        prompts=["p"] * len(completions),
        completions=completions,
        completion_ids=ids,
        answer=answers,
        **kw,
    ), rf


def test_length_reward_text_and_conversational_agree():
    texts = ["</think> \\boxed{3}", "</think> \\boxed{4}", "no box", "</think> \\boxed{3}"]
    ids = [[5] * 3 + [EOS], [5] * 3 + [EOS], [5] * 3 + [EOS], [5] * 9 + [EOS]]
    answers = ["3"] * 4
    plain, _ = _call("laser", texts, ids, answers, target_length=5)
    conv, _ = _call(
        "laser",
        [[{"role": "assistant", "content": t}] for t in texts],
        ids,
        answers,
        target_length=5,
    )
    assert plain == conv == [1.5, -0.5, -1.0, 1.0]


def test_length_reward_truncation_uses_ids_not_text():
    texts = ["</think> \\boxed{3}"] * 3
    ids = [[5, 5, EOS], [5, 5, 5, 5], [5, 5, 5, EOS]]  # 2nd never ends; 3rd ends after L_T = 3
    out, rf = _call("truncation", texts, ids, ["3"] * 3, target_length=3)
    assert out == [1.0, 0.0, 0.0]
    assert rf.last["truncated"] == [False, True, True]
    out, _ = _call("truncation", texts, ids, ["3"] * 3, target_length=3, truncated_factor=0.1)
    assert out == pytest.approx([1.0, 0.1, 0.1])


def test_length_reward_laser_d_uses_bucket_targets():
    # group a: 2/2 correct -> easy (target 2); group b: 1/2 -> medium (target 10)
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{1}", "\\boxed{9}"]
    ids = [[5, 5, 5, EOS]] * 4  # length 4
    rf = LengthReward(
        RewardConfig(reward_method="laser_d", target_length=50),
        eos_token_ids=[EOS],
        grader=_fake_grader,
    )
    rf.targets = {"easy": 2, "medium": 10, "hard": 50}
    out = rf(
        prompts=["a", "a", "b", "b"],
        completions=texts,
        completion_ids=ids,
        answer=["1"] * 4,
        id=["a", "a", "b", "b"],
    )
    assert out == [1.0, 1.0, 1.5, -0.5]
    assert rf.last["targets"] == [2, 2, 10, 10]


def test_length_reward_da_dler_and_group_methods():
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "\\boxed{2}"]
    ids = [
        [5] * 5 + [EOS],
        [5] * 2 + [EOS],
        [5] * 5 + [EOS],
        [5] * 2 + [EOS],
        [5] * 2 + [EOS],
    ]  # 6, 3, 6, 3, 3
    keys = ["a", "a", "b", "b", "b"]
    # a: ratio 1 >= 0.5 -> short target 4, its 6-token answer is truncated;
    # b: ratio 1/3 < 0.5 -> long target 10, its 6-token answer keeps its reward
    out, _ = _call("da_dler", texts, ids, ["1"] * 5, keys, target_length=10, da_short_target=4)
    assert out == [0.0, 1.0, 1.0, 0.0, 0.0]
    # Kimi (Laser base reward): a: lengths 6, 3 -> lam -0.5, 0.5 -> 0.5, 1.5;
    # b: correct 6 -> 1 - 0.5; wrong 3-token ones: -0.5 + min(0, 0.5)
    out, _ = _call("kimi", texts, ids, ["1"] * 5, keys)
    assert out == pytest.approx([0.5, 1.5, 0.5, -0.5, -0.5])


def test_missing_answer_column_is_a_clear_error():
    rf = LengthReward(RewardConfig(reward_method="laser"), eos_token_ids=[EOS], grader=_fake_grader)
    with pytest.raises(ShortcotError, match="answer"):
        rf(prompts=["p"], completions=["x"], completion_ids=[[EOS]])
    with pytest.raises(ShortcotError, match="unknown reward method"):
        RewardConfig(reward_method="nope")


def test_thinkprune_schedule_lowers_the_target_in_stages():
    class State:
        global_step = 0

    rf = LengthReward(
        RewardConfig(
            reward_method="truncation", target_length=99, target_schedule=[[0, 4], [10, 2]]
        ),
        eos_token_ids=[EOS],
        grader=_fake_grader,
    )
    texts, ids = ["\\boxed{3}"], [[5, 5, EOS]]  # 3 tokens
    assert rf(
        prompts=["p"], completions=texts, completion_ids=ids, answer=["3"], trainer_state=State()
    ) == [1.0]
    State.global_step = 10  # L_T drops to 2: the 3-token answer is now cut off
    assert rf(
        prompts=["p"], completions=texts, completion_ids=ids, answer=["3"], trainer_state=State()
    ) == [0.0]


def test_length_reward_answer_contract_when_the_prompt_opened_think():
    """R1-style prompts open <think>: a completion that never writes </think> has no answer
    (bad format), even when it boxed the right answer while thinking and ended with EOS,
    and even when it was cut off at the limit. Hand-worked, L_T = 5:
    a: unclosed, EOS, 4 tokens; b: closed, EOS, 4 tokens; c: unclosed, cut off, 9 tokens."""
    from evals.grading import math_grade

    texts = ["12+7 is \\boxed{19}", "19 </think> \\boxed{19}", "\\boxed{19} and so on"]
    ids = [[5, 5, 5, EOS], [5, 5, 5, EOS], [5] * 9]
    expected = {  # method: (prompt opened <think>, prompt did not)
        "truncation": ([0.0, 1.0, 0.0], [1.0, 1.0, 0.0]),
        "correctness": ([0.0, 1.0, 0.0], [1.0, 1.0, 1.0]),
        # base +1 / -0.5 / -1 (bad format), +0.5 when correct and <= L_T
        "laser": ([-1.0, 1.5, -1.0], [1.5, 1.5, 1.0]),
        # wrong and longer than L_A: the exploration bonus (-1 + 0.5)
        "laser_de": ([-1.0, 1.5, -0.5], [1.5, 1.5, 1.0]),
    }
    for method, (opened, plain) in expected.items():
        for flag, want in ((True, opened), (False, plain)):
            rf = LengthReward(
                RewardConfig(reward_method=method, target_length=5),
                eos_token_ids=[EOS],
                grader=math_grade,
                prompt_opens_think=flag,
            )
            conv = [[{"role": "assistant", "content": t}] for t in texts]
            out = rf(prompts=[[{"role": "user", "content": "q"}]] * 3, completions=conv,
                     completion_ids=ids, answer=["19"] * 3, id=["a", "b", "c"])  # fmt: skip
            assert out == want, (method, flag)
            assert rf.last["formatted"] == ([False, True, False] if flag else [True] * 3)


def test_registry_pins_each_methods_properties():
    """One entry per method; the facts that used to be spelled out in five places."""
    assert METHODS == ("truncation", "laser", "laser_d", "laser_de", "da_dler", "l1_exact",
                       "l1_max", "kimi", "arora_zanette", "correctness")  # fmt: skip
    binary = {m for m, e in REWARD_METHODS.items() if e.base == "binary"}
    assert binary == {"truncation", "da_dler", "correctness", "l1_max"}
    alphas = {m: e.alpha for m, e in REWARD_METHODS.items() if e.alpha is not None}
    assert alphas == {"laser": 0.5, "laser_d": 0.5, "laser_de": 0.5, "l1_exact": 0.0003,
                      "l1_max": 0.01, "arora_zanette": 0.1}  # fmt: skip
    groups = {m for m, e in REWARD_METHODS.items() if e.needs_groups}
    assert groups == {"laser_d", "laser_de", "da_dler", "kimi", "arora_zanette"}
    assert {m for m, e in REWARD_METHODS.items() if e.adaptive} == {"laser_d", "laser_de"}
    assert RewardConfig(reward_method="l1_max").resolved_base() == "binary"
    assert RewardConfig(reward_method="kimi", reward_base="binary").resolved_base() == "binary"
    assert RewardConfig(reward_method="l1_exact", reward_alpha=0.2).resolved_alpha() == 0.2


def test_every_method_through_the_reward_function_equals_its_formula():
    """LengthReward applies each registry entry as the pure formulas do by hand."""
    texts = ["\\boxed{1}", "\\boxed{2}", "\\boxed{1}", "no box"]
    ids = [[5] * 3 + [EOS], [5] * 5 + [EOS], [7, 8] * 4, [5, EOS]]  # 4, 6, 8 (no EOS), 2 tokens
    keys = ["a", "a", "b", "b"]
    r = [1.0, -0.5, 1.0, -1.0]  # Laser's base: correct, wrong, correct, bad format
    correct, lengths = [True, False, True, False], [4, 6, 8, 2]
    cases = {
        "l1_exact": [l1_exact_reward(x, n, 5) for x, n in zip(r, lengths)],
        "l1_max": [l1_max_reward(c, n, 5, 0.01, 0.5) for c, n in zip(correct, lengths)],
        "arora_zanette": arora_zanette_rewards(r[:2], correct[:2], lengths[:2])
        + arora_zanette_rewards(r[2:], correct[2:], lengths[2:]),
        # the 2nd (wrong, 6 > 5 tokens) repeats (5, 5) 4 times: no exploration bonus
        "laser_de": [
            laser_de_reward(x, c, n, 5, repetitive=(i == 1))
            for i, (x, c, n) in enumerate(zip(r, correct, lengths))
        ],  # fmt: skip
    }
    for method, want in cases.items():
        out, _ = _call(method, texts, ids, ["1"] * 4, keys, target_length=5,
                       repetition_check=True, repetition_ngram=2, repetition_repeats=3)  # fmt: skip
        assert out == pytest.approx(want), method


def test_trl_repetition_penalty_cannot_give_the_verdict():
    """Why has_repetition is not TRL's detector: the same TRL penalty, different verdicts."""
    from trl.rewards import get_repetition_penalty_reward

    once_four_times, three_twice = [1, 1, 1, 1, 1, 2, 1, 3], [1, 1, 1, 2, 1, 2, 1, 3]
    penalty = get_repetition_penalty_reward(ngram_size=2)([once_four_times, three_twice])
    assert penalty[0] == penalty[1] == pytest.approx(-3 / 7)
    assert has_repetition(once_four_times, n=2, repeats=3)
    assert not has_repetition(three_twice, n=2, repeats=3)


def test_target_schedule_from_text_and_bad_schedules():
    assert RewardConfig(target_schedule="[[0, 48], [150, 32]]").target_schedule == [
        [0, 48],
        [150, 32],
    ]
    assert RewardConfig(target_schedule=None).target_schedule == []
    for bad in ("[[0, 48], [150]]", "48", "[[0, x]]"):
        with pytest.raises(ShortcotError, match="target_schedule"):
            RewardConfig(target_schedule=bad)
    with pytest.raises(ShortcotError, match="reward_base"):
        RewardConfig(reward_base="other")
