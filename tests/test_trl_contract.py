"""Fails when the TRL internals that train.trainer overrides or reads change under it.

train.trainer (TRL_VERSION_RANGE) wraps GRPOTrainer._calculate_rewards and
_generate_and_score_completions, calls _generate for LASER-D's monitor, and maps DLER's
optimiser onto GRPOConfig fields; each of those is pinned here.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch
import trl
from packaging.specifiers import SpecifierSet
from trl import GRPOConfig, GRPOTrainer

from train.trainer import TRL_VERSION_RANGE


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train ~10x faster on one thread than on two on a shared, loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_installed_trl_is_in_the_pinned_range():
    assert trl.__version__ in SpecifierSet(",".join(TRL_VERSION_RANGE))


def test_overridden_method_signatures():
    sig = lambda f: list(inspect.signature(f).parameters)  # noqa: E731
    assert sig(GRPOTrainer._calculate_rewards) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]
    assert sig(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert sig(GRPOTrainer._generate) == ["self", "prompts"]


def test_config_fields_we_map_onto():
    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    for name in (
        "epsilon",
        "epsilon_high",
        "delta",
        "beta",
        "loss_type",
        "scale_rewards",
        "entropy_coef",
        "mask_truncated_completions",
        "steps_per_generation",
        "num_generations",
        "max_completion_length",
        "warmup_steps",
        "use_vllm",
        "generation_batch_size",
        "activation_checkpointing",
        "gradient_checkpointing",
        "hub_private_repo",
    ):
        assert name in fields, name


def test_loss_internals_we_rely_on():
    src = inspect.getsource(GRPOTrainer._compute_loss)
    # TRL's delta caps the ratio inside -min(r A, clip(r) A): equal to PPO dual-clip for delta > 1 + eps_high
    assert "coef_1 = torch.clamp(coef_1, max=self.args.delta)" in src
    # token-mean loss over the whole generation batch for loss_type="dapo"
    assert 'inputs["num_items_in_batch"]' in src and '"dapo"' in src
    # per-sequence advantages are broadcast over tokens
    assert "advantages.unsqueeze(1)" in src


def test_generate_and_score_returns_the_keys_we_replace(tmp_path, tiny_model_dir):
    from datasets import Dataset

    from evals.prompts import build_messages

    rows = [{"prompt": build_messages(f"q{i}"), "answer": "1"} for i in range(2)]
    calls = []

    def reward(prompts, completions, completion_ids, answer, **kwargs):
        calls.append((len(prompts), sorted(kwargs)))
        return [float(len(c)) for c in completion_ids]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=4,
        max_steps=1,
        report_to=[],
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    trainer.model.train()
    inputs = [dict(rows[0]), dict(rows[0]), dict(rows[1]), dict(rows[1])]
    out = trainer._generate_and_score_completions(inputs)
    for key in (
        "prompt_ids",
        "prompt_mask",
        "completion_ids",
        "completion_mask",
        "advantages",
        "num_items_in_batch",
    ):
        assert key in out, key
    assert out["advantages"].shape == (4,)
    assert out["completion_mask"].shape == out["completion_ids"].shape
    assert trainer.reward_weights.shape == (1,)
    assert isinstance(trainer.eos_token_ids, list) and trainer._tokenizer.pad_token_id is not None
    assert calls and calls[0][0] == 4 and {"trainer_state", "log_metric"} <= set(calls[0][1])
    result = trainer._generate([r["prompt"] for r in inputs])
    assert (
        len(result) == 8 and len(result[1]) == 4 and len(result[3]) == 4
    )  # completion_ids, completions
    assert set(trainer._metrics) == {"train", "eval"}
    json.dumps(trainer.state.log_history)
    torch.testing.assert_close(
        out["completion_mask"].sum(), out["num_items_in_batch"].to(out["completion_mask"].dtype)
    )
