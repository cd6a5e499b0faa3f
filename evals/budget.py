"""Budget forcing: cap the think block at B tokens, close it and force the answer.

The inference-time length control of s1 (Muennighoff et al. 2025, "s1: Simple test-time
scaling", section 3.1, "budget forcing"): when the thinking reaches its budget, append the
end-of-thinking delimiter and a "Final Answer:" cue, and let the model answer. It is the
survey's "length budgeting" baseline that post-training is compared against.

Generation runs in two phases for every sample:

1. generate at most ``B`` tokens;
2. samples that stopped (EOS) are done. Samples that closed their think block within
   ``B`` continue as they are; samples still thinking get ``cue`` appended (it starts
   with ``</think>``). Both continue for the rest of ``max_new_tokens``.

All tokens count: thinking, the forced cue and the answer. ``max_new_tokens`` bounds the
whole completion, so ``B`` must leave room for the cue and an answer.

Simplification: the think block counts as closed when the token ids of ``</think>``
appear in the completion; a tokenizer that merges ``</think>`` with neighbouring text
would hide it (R1-style tokenizers have it as one added token).
"""

from __future__ import annotations

from dataclasses import dataclass

from artifacts.errors import ShortcotError
from evals.backends import Backend, Completion, Request, SamplingParams

DEFAULT_CUE = "\n</think>\n\nFinal Answer: "


def find_subsequence(seq: list[int], sub: list[int]) -> int:
    """Index just past the last occurrence of ``sub`` in ``seq``; -1 when absent.

    >>> find_subsequence([1, 2, 3, 2, 3, 4], [2, 3])
    5
    >>> find_subsequence([1, 2], [3])
    -1
    """
    if not sub:
        return -1
    for start in range(len(seq) - len(sub), -1, -1):
        if seq[start : start + len(sub)] == sub:
            return start + len(sub)
    return -1


@dataclass(frozen=True)
class Continuation:
    """What phase 2 does with one phase-1 completion."""

    append: list[int]  # ids added before continuing (the cue when forced)
    max_new_tokens: int  # 0 = nothing more to generate
    forced: bool


def plan_continuation(
    phase1: Completion, close_ids: list[int], cue_ids: list[int], max_new_tokens: int
) -> Continuation:
    """Decide phase 2 for one sample (see the module docstring).

    >>> c = Completion("...", [5, 6, 7], finished=False)
    >>> plan_continuation(c, close_ids=[9], cue_ids=[9, 4], max_new_tokens=10)
    Continuation(append=[9, 4], max_new_tokens=5, forced=True)
    >>> plan_continuation(Completion("", [5, 9, 7], False), [9], [9, 4], 10)
    Continuation(append=[], max_new_tokens=7, forced=False)
    >>> plan_continuation(Completion("", [5, 2], True), [9], [9, 4], 10)
    Continuation(append=[], max_new_tokens=0, forced=False)
    """
    used = phase1.num_tokens
    if phase1.finished:
        return Continuation([], 0, False)
    if find_subsequence(phase1.token_ids, close_ids) != -1:
        return Continuation([], max(max_new_tokens - used, 0), False)
    return Continuation(list(cue_ids), max(max_new_tokens - used - len(cue_ids), 0), True)


def check_budget(budget: int, max_new_tokens: int, cue_tokens: int) -> None:
    """``budget`` must leave room for the cue and at least one answer token."""
    if budget < 1:
        raise ShortcotError(f"--think-budget must be >= 1, got {budget}")
    if budget + cue_tokens >= max_new_tokens:
        raise ShortcotError(
            f"--think-budget {budget} + the {cue_tokens}-token cue leaves no room for an answer "
            f"within --max-new-tokens {max_new_tokens}; raise --max-new-tokens or lower the budget"
        )


def generate_with_budget(
    backend: Backend,
    requests: list[Request],
    params: SamplingParams,
    budget: int,
    cue: str = DEFAULT_CUE,
    progress: bool = False,
) -> list[tuple[Completion, bool]]:
    """Budget-forced generation: one (completion, forced) per request, in order.

    The returned completion holds all tokens of both phases (``token_ids`` = phase 1 +
    cue + phase 2); ``finished`` is whether the final phase stopped on EOS.
    """
    cue_ids = backend.encode(cue)
    close_ids = backend.encode("</think>")
    check_budget(budget, params.max_new_tokens, len(cue_ids))
    p1_params = SamplingParams(budget, params.temperature, params.top_p, 1, params.seed)
    phase1 = backend.generate_requests(requests, p1_params, progress=progress)
    plans = [plan_continuation(c, close_ids, cue_ids, params.max_new_tokens) for c in phase1]
    results: list[tuple[Completion, bool]] = [(c, p.forced) for c, p in zip(phase1, plans)]
    # Continuations differ only in their token allowance (forced or not): one call per value.
    for allowance in sorted({p.max_new_tokens for p in plans if p.max_new_tokens > 0}):
        idx = [i for i, p in enumerate(plans) if p.max_new_tokens == allowance]
        reqs = [
            Request(
                requests[i].prompt_ids + phase1[i].token_ids + plans[i].append,
                requests[i].sample_index,
            )
            for i in idx
        ]
        p2_params = SamplingParams(allowance, params.temperature, params.top_p, 1, params.seed)
        for i, c2 in zip(idx, backend.generate_requests(reqs, p2_params, progress=progress)):
            ids = phase1[i].token_ids + plans[i].append + c2.token_ids
            results[i] = (Completion(backend.decode(ids), ids, c2.finished), plans[i].forced)
    return results
