"""Model-based step importance for `step_prune` (SPIRIT, docs/algorithms.md §4.4).

A step matters if the model finds the rest of the completion much less likely without
it. `PerplexityScorer` scores each step by the relative increase in the perplexity of the
whole assistant turn (given the prompt) when that step alone is removed:
``score_i = ppl(without step i) / ppl(full) - 1``. Steps scoring below a threshold are
candidates for removal. Written by hand because no installed library scores sentence
removal; the forward passes are plain transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from distill.strategies import Context


def completion_perplexity(model, tokenizer, prompt: list[dict] | None, completion: str) -> float:
    """exp(mean negative log-likelihood) of the tokens of ``completion`` given ``prompt``
    (rendered with the tokenizer's chat template and its generation prompt)."""
    if prompt:
        prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    else:
        prefix = ""
    p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not c_ids:
        return float("inf")
    ids = torch.tensor([p_ids + c_ids], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    targets = ids[0, 1:]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return math.exp(nll[len(p_ids) - 1 :].mean().item()) if p_ids else math.exp(nll.mean().item())


class PerplexityScorer:
    """``scorer(steps, ctx) -> [relative perplexity increase when step i is removed]``."""

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path: str, device: str | None = None) -> PerplexityScorer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        if device:
            model.to(device)
        return cls(model, tok)

    def __call__(
        self, steps: list[str], rebuild: Callable[[str], str], ctx: Context
    ) -> list[float]:
        """``rebuild(thinking)`` turns kept steps back into the full completion."""
        base = completion_perplexity(
            self.model, self.tokenizer, ctx.prompt, rebuild("".join(steps))
        )
        scores = []
        for i in range(len(steps)):
            rest = "".join(steps[:i] + steps[i + 1 :])
            ppl = completion_perplexity(self.model, self.tokenizer, ctx.prompt, rebuild(rest))
            scores.append(ppl / base - 1.0)
        return scores
