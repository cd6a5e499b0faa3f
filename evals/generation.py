"""The generation interface every backend implements: chat prompts in, completions (text +
token ids + finished flag) out, with per-sample seeds (`sample_seed`).

Truncation is decided from token ids: a completion is ``finished`` when it produced an
end-of-sequence token within ``max_new_tokens``, never from its text. The backends:
`evals.hf_backend` (transformers) and `evals.vllm_backend` (vLLM); `evals.backends.load_backend`
picks one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifacts.errors import ShortcotError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding (``top_p`` is then unused)."""

    max_new_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    n: int = 1  # samples per prompt
    seed: int = 0

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ShortcotError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ShortcotError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ShortcotError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ShortcotError(f"n (samples per prompt) must be >= 1, got {self.n}")


@dataclass
class Completion:
    """One generated completion.

    text:      decoded completion (special tokens skipped; ``<think>``/``</think>`` kept)
    token_ids: generated ids, no padding, the end-of-sequence token included if produced
    finished:  stopped on end-of-sequence within ``max_new_tokens``; False = truncated
    """

    text: str
    token_ids: list[int]
    finished: bool

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Request:
    """One sequence to generate: the prompt's token ids and which sample of it this is."""

    prompt_ids: list[int]
    sample_index: int = 0


def sample_seed(seed: int, prompt_ids: list[int], sample_index: int) -> int:
    """The seed of one sample: a hash of (run seed, prompt token ids, sample index).

    Stable across processes and batchings (unlike Python's ``hash``), 63 bits so it fits
    any generator's seed type.

    >>> sample_seed(0, [1, 2, 3], 0) == sample_seed(0, [1, 2, 3], 0)
    True
    >>> sample_seed(0, [1, 2, 3], 0) != sample_seed(0, [1, 2, 3], 1)
    True
    """
    h = hashlib.sha256(f"{seed}:{sample_index}:".encode())
    h.update(",".join(map(str, prompt_ids)).encode())
    return int.from_bytes(h.digest()[:8], "little") & (2**63 - 1)


def cut_at_eos(
    token_ids: list[int], eos_ids: set[int], pad_id: int | None = None
) -> tuple[list[int], bool]:
    """Trim generated ids after the first end-of-sequence token (kept) and drop padding.

    Returns (ids, finished). Without an end-of-sequence token the completion was cut off by
    the token limit: trailing padding is removed (only when pad is not itself an eos id,
    which the first branch already handles) and ``finished`` is False.

    >>> cut_at_eos([5, 6, 2, 0, 0], {2}, pad_id=0)
    ([5, 6, 2], True)
    >>> cut_at_eos([5, 6, 7], {2})
    ([5, 6, 7], False)
    """
    for i, t in enumerate(token_ids):
        if t in eos_ids:
            return list(token_ids[: i + 1]), True
    ids = list(token_ids)
    if pad_id is not None:
        while ids and ids[-1] == pad_id:
            ids.pop()
    return ids, False


class Backend:
    """The interface: render chat prompts, generate completions.

    Subclasses implement `generate_requests`; everything else is shared.
    """

    name = "base"
    tokenizer: PreTrainedTokenizerBase
    eos_token_ids: set[int]

    def render(self, messages: list[dict]) -> str:
        """The prompt text of one conversation: the model's chat template with the
        generation prompt appended (for R1-style models this already opens ``<think>``)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ShortcotError(
                "the model's tokenizer has no chat template; use a chat/instruct model or add "
                "chat_template to its tokenizer_config.json"
            )
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as it is (the chat template already holds any BOS token)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.encode(self.render(messages))

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def generate_requests(
        self, requests: list[Request], params: SamplingParams, progress: bool = True
    ) -> list[Completion]:
        """One completion per request, in order (``params.n`` is ignored here)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds beyond its memory (vLLM replica processes)."""

    def generate(
        self, messages: list[list[dict]], params: SamplingParams, progress: bool = True
    ) -> list[list[Completion]]:
        """``params.n`` completions for each conversation, in order."""
        params.validate()
        prompts = [self.prompt_ids(m) for m in messages]
        requests = [Request(p, k) for p in prompts for k in range(params.n)]
        flat = self.generate_requests(requests, params, progress=progress)
        return [flat[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]


def _eos_ids(tokenizer, generation_config) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        ids.update(source if isinstance(source, list | tuple) else [source])
    if not ids:
        raise ShortcotError("the model defines no eos_token_id; set it in generation_config.json")
    return ids
