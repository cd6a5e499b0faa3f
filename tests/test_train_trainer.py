"""ShortcotGRPOTrainer on a tiny model: one step changes every weight and uses exactly the
DLER advantage; dynamic sampling refills the batch with informative groups."""

from __future__ import annotations

import json

import pytest
import torch

from evals.grading import Grade
from train.config import ModelArguments, RLConfig
from train.length_reward import RewardConfig
from train.rl import build_trainer


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train ~10x faster on one thread than on two on a shared, loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


G = 4


def parity_grade(completion: str, reference: str) -> Grade:
    """A deterministic stand-in grader for random tiny models: odd references are always
    right (so their groups are uniform), even ones right when the text length is even."""
    ok = int(reference) % 2 == 1 or len(completion) % 2 == 0
    return Grade(ok, reference if ok else None, True)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rl_data") / "train.jsonl"
    with path.open("w") as f:
        for i in range(8):
            f.write(
                json.dumps({"id": f"p{i}", "problem": f"What is {i} + 7?", "answer": str(2 * i)})
                + "\n"
            )
    return path


def _trainer(tmp_path, model_dir, data, **kw):
    cfg = RLConfig(
        data=str(data),
        output_dir=str(tmp_path / "out"),
        reward_method=kw.pop("method", "truncation"),
        grader="math",
        target_length=6,
        num_generations=G,
        per_device_train_batch_size=8,
        max_steps=kw.pop("max_steps", 1),
        max_completion_length=8,
        learning_rate=1e-3,
        save_steps=1000,
        **kw,
    )
    trainer = build_trainer(
        cfg, ModelArguments(model_name_or_path=str(model_dir)), tmp_path / "work"
    )
    trainer.length_reward.grader = parity_grade
    return trainer


def _independent_dler(rewards, lengths, g):
    """DLER Eq. 3 written out in plain Python (token-weighted, unbiased)."""
    adv = []
    for s in range(0, len(rewards), g):
        grp = rewards[s : s + g]
        adv += [r - sum(grp) / g for r in grp]
    total = sum(lengths)
    mu = sum(a * n for a, n in zip(adv, lengths)) / total
    var = sum(n * (a - mu) ** 2 for a, n in zip(adv, lengths)) / (total - 1)
    return [(a - mu) / (var + 1e-8) ** 0.5 for a in adv]


def test_one_step_changes_weights_and_applies_dler_advantage(tmp_path, tiny_model_dir, data_file):
    # LASER's reward varies with the (random) completions, truncation's would be all 0 here
    trainer = _trainer(
        tmp_path,
        tiny_model_dir,
        data_file,
        dynamic_sampling=False,
        advantage="dler",
        method="laser",
    )
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"

    # the rewards and lengths the reward function saw, and an independent DLER computation
    seen = trainer.length_reward.last
    expected = _independent_dler(seen["rewards"], seen["lengths"], G)
    used = trainer.last_batch["advantages"]
    torch.testing.assert_close(used, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert trainer.last_batch["lengths"].tolist() == seen["lengths"]
    # and these are the advantages the loss consumed (TRL shuffles the buffered batch)
    buffered = torch.cat([b["advantages"] for b in trainer._buffered_inputs])
    torch.testing.assert_close(buffered.sort().values, used.sort().values)
    assert any(abs(a) > 0 for a in expected)


def test_dynamic_sampling_refills_with_informative_groups(tmp_path, tiny_model_dir, data_file):
    # answers 0, 2, 4, ... are even, so groups vary; make half the prompts uniform (odd answers)
    odd = tmp_path / "mixed.jsonl"
    with odd.open("w") as f:
        for i in range(8):
            f.write(
                json.dumps({"id": f"q{i}", "problem": f"Add {i} and 1", "answer": str(i)}) + "\n"
            )
    trainer = _trainer(
        tmp_path,
        tiny_model_dir,
        odd,
        dynamic_sampling=True,
        max_extra_rounds=8,
        max_steps=2,
        method="laser",
    )
    trainer.train()
    batch = trainer.last_batch
    assert batch["rewards"].numel() == 8
    grouped = batch["rewards"].view(-1, G)
    informative = grouped.max(1).values > grouped.min(1).values
    assert informative[batch["valid"].view(-1, G)[:, 0]].all()
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/filtered_fraction" in h]
    assert logs and all(0.0 <= h["dynamic_sampling/filtered_fraction"] <= 1.0 for h in logs)
    assert any(h["dynamic_sampling/rounds"] > 1 for h in logs)


def test_group_mean_and_grpo_keep_trl_advantages(tmp_path, tiny_model_dir, data_file):
    from train.advantages import grpo_advantages

    trainer = _trainer(
        tmp_path,
        tiny_model_dir,
        data_file,
        dynamic_sampling=False,
        advantage="grpo",
        method="laser",
    )
    trainer.train()
    r = torch.tensor(trainer.length_reward.last["rewards"])
    torch.testing.assert_close(
        trainer.last_batch["advantages"], grpo_advantages(r, G), atol=1e-5, rtol=1e-5
    )


# ----------------------------------------------- the answer contract on thinking templates

# (completion, ends with EOS) for "What is 0 + 7?" (answer 7); max_completion_length = 32
CONTRACT_SCRIPT = [
    ("0 + 7 = \\boxed{7}", True),  # never writes </think>, ends with EOS
    ("7 </think> \\boxed{7}", True),  # closes the block the prompt opened
    ("<think> 7 </think> \\boxed{7}", True),  # opens and closes it itself
    ("\\boxed{7}" + " so" * 40, False),  # cut off at the limit, never closed
]


@pytest.mark.parametrize(
    "template, kwargs, opened",
    [
        ("r1", {}, True),
        ("qwen3", {}, False),
        ("qwen3", {"chat_template_kwargs": {"enable_thinking": False}}, False),
    ],
)
def test_rewards_follow_the_answer_contract_of_the_chat_template(
    tmp_path, tiny_tokenizer, template, kwargs, opened
):
    """train.rl reads the contract off the chat template (as TRL renders it, template
    arguments included) and every reward, called by TRL's own `_calculate_rewards`, and the
    LASER-D monitor grade by it: with an R1-style template an unclosed completion is bad
    format (-1) and gets no correctness reward, even with EOS or a box while thinking."""
    from chat_templates import TEMPLATES, model_with_template

    model_dir = model_with_template(tmp_path / "m", tiny_tokenizer, TEMPLATES[template])
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "p0", "problem": "What is 0 + 7?", "answer": "7"}) + "\n")
    cfg = RLConfig(data=str(data), output_dir=str(tmp_path / "out"), reward_method="laser_d",
                   grader="math", target_length=4, num_generations=G,
                   per_device_train_batch_size=G, max_completion_length=32, save_steps=1000,
                   dynamic_sampling=False, laser_d_monitor_size=1, laser_d_budget_step=1,
                   **kwargs)  # fmt: skip
    trainer = build_trainer(cfg, ModelArguments(model_name_or_path=str(model_dir)),
                            tmp_path / "work")  # fmt: skip
    reward = trainer.length_reward
    tok = trainer.processing_class
    eos = tok.eos_token_id
    row = dict(trainer.train_dataset[0])
    ids = []
    for text, ends in CONTRACT_SCRIPT:
        t = tok(text, add_special_tokens=False)["input_ids"] + ([eos] if ends else [])
        ids.append(t[: cfg.max_completion_length])
    lengths = [len(t) for t in ids]
    assert [eos in t for t in ids] == [True, True, True, False] and max(lengths[:3]) <= 16
    completions = [[{"role": "assistant", "content": tok.decode(t, skip_special_tokens=True)}]
                   for t in ids]  # fmt: skip

    def rewards(method):
        reward.config = RewardConfig(reward_method=method, grader="math", target_length=16)
        out = trainer._calculate_rewards([row] * G, [row["prompt"]] * G, completions, ids)
        return out[:, 0].tolist()

    if opened:  # only the 2nd and 3rd have an answer
        assert rewards("truncation") == [0.0, 1.0, 1.0, 0.0]
        assert rewards("laser") == [-1.0, 1.5, 1.5, -1.0]
    else:  # no think block opened: the 1st and the cut-off 4th are plain answers
        assert rewards("truncation") == [1.0, 1.0, 1.0, 0.0]
        assert rewards("laser") == [1.5, 1.5, 1.5, 1.0]

    assert reward.prompt_opens_think is opened

    # LASER-D's monitor grades by the same contract: with the prompt opening the block,
    # 2 of the 4 rollouts are correct ("medium"), else 4 of 4 ("easy"). With budgets
    # 4, 5, ..., 32, the bucket's target is its 2nd shortest rollout (ECR = P * C_d >= 1
    # with C_d = 2 or 3 of K = 4); the empty buckets get the longest rollout.
    trainer._generate = lambda prompts: (None, ids, None, completions)
    reward.config = RewardConfig(reward_method="laser_d", grader="math", target_length=4)
    targets = trainer.monitor_targets()
    bucket = "medium" if opened else "easy"
    assert targets == {
        b: sorted(lengths)[1] if b == bucket else max(lengths) for b in ("easy", "medium", "hard")
    }
