"""Shared fixtures: tiny HF checkpoints built locally (no Hub access in tests)."""

from __future__ import annotations

import pytest
import torch

# One intra-op thread: tiny models are overhead-bound, and a second thread only adds
# contention (measured ~10x slower training steps under load with two).
torch.set_num_threads(1)

CORPUS = [
    "What is 12 + 7? <think> 12 plus 7 is 19. wait, let me check: 19. </think> \\boxed{19}",
    "Let's think step by step and output the final answer within \\boxed{}.",
    "a 3 b 5 c 2 sum mod 10 ; step : a = 3 , total 3 ; b = 5 , total 8 ; answer",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from testbed.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, vocab_size=300)


def make_tiny_model_dir(
    path, tokenizer, seed=0, hidden_size=32, num_layers=2, max_shard_size="5GB", **kw
):
    """Save a random tiny Llama + tokenizer as an HF folder at ``path``; returns the model."""
    from testbed.model import init_model, save_checkpoint, tiny_llama_config

    cfg = tiny_llama_config(
        tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=4, **kw
    )
    model = init_model(cfg, seed=seed)
    save_checkpoint(model, tokenizer, path, max_shard_size=max_shard_size)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A random 2-layer, 32-wide Llama with the tiny tokenizer and chat template."""
    path = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model_dir(path, tiny_tokenizer)
    return path
