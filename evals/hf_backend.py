"""The ``"hf"`` backend: transformers ``generate`` in batches of ``batch_size`` sequences,
left padding, KV cache. Prompts are sorted by length before batching so little padding is
computed, and rows that have finished leave the batch every ``EVICT_EVERY`` tokens.

Sampling is seeded per sample (`evals.generation.sample_seed`): ``generate(do_sample=True)``
draws all rows from the one global torch generator, so a logits processor
(`_PerRowSampler`) draws each row's token from its own generator and hands greedy decoding
a one-hot choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artifacts.errors import ShortcotError
from evals.generation import (
    Backend,
    Completion,
    Request,
    SamplingParams,
    _eos_ids,
    cut_at_eos,
    sample_seed,
)

if TYPE_CHECKING:
    import torch


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of prompts padded on the left to the longest one, so that
    generation continues from the right edge of every row.

    >>> left_pad([[5, 6], [7]], 0)[0].tolist(), left_pad([[5, 6], [7]], 0)[1].tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


# Small enough that little work is spent on finished rows; each call costs a few ms of setup.
EVICT_EVERY = 16


def _cache_kwarg() -> str:
    """The name under which ``generate`` takes (and returns) the KV cache: ``cache`` since
    transformers renamed it (its output dataclass has a ``cache`` field), else
    ``past_key_values``. The old name still works but warns on every chunk that it goes away
    in transformers 6; this keeps the backend right across the whole ``transformers>=5`` range.
    """
    import dataclasses

    from transformers.generation.utils import GenerateDecoderOnlyOutput

    names = {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return "cache" if "cache" in names else "past_key_values"


def cache_can_drop_rows(cache) -> bool:
    """Whether rows can be dropped from this KV cache (dynamic caches: yes; static and
    linear-attention layers of transformers 5 do not implement ``batch_select_indices``)."""
    layers = getattr(cache, "layers", None)
    return layers is not None and all(hasattr(layer, "batch_select_indices") for layer in layers)


class _PerRowSampler:
    """A logits processor that samples each row from its own seeded generator.

    Applies temperature and nucleus (top-p) filtering with transformers' own warpers, draws
    one token per row with ``torch.multinomial(generator=row's generator)`` and returns
    logits that are 0 at the drawn token and -inf elsewhere, so that greedy decoding
    (``do_sample=False``) emits exactly the drawn token. Row ``i`` uses generator ``i``;
    when finished rows leave the batch, `select_rows` drops their generators too.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.seeds = seeds
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        scores = scores.float()
        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        choice = torch.stack(
            [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)]
        )
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice, 0.0)

    def select_rows(self, keep: list[int]) -> None:
        """Keep only these rows' generators (in this order): rows that finished left the batch."""
        if self.generators is not None:
            self.generators = [self.generators[j] for j in keep]


def _resolve_dtype(dtype: str | None, device: str):
    import torch

    from artifacts.dtypes import torch_dtype

    if dtype in (None, "auto"):
        # bf16/fp16 kernels on CPU are slow and inexact; checkpoints' own dtype on GPU.
        return torch.float32 if device == "cpu" else "auto"
    return torch_dtype(dtype)


class HFBackend(Backend):
    """transformers ``generate``: batched, left padding, KV cache, per-sample seeds."""

    name = "hf"

    def __init__(
        self, model: str, batch_size: int = 32, device: str | None = None, dtype: str | None = None
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from artifacts.hub import resolve_local

        if batch_size < 1:
            raise ShortcotError(f"batch_size must be >= 1, got {batch_size}")
        path = resolve_local(model)
        self.model_path = path
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_resolve_dtype(dtype, self.device)
        )
        self.model.to(self.device).eval()
        self.eos_token_ids = _eos_ids(self.tokenizer, self.model.generation_config)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(self.eos_token_ids)

    def _generate_batch(self, batch: list[Request], params: SamplingParams) -> list[Completion]:
        """Generate one batch, ``EVICT_EVERY`` tokens per ``generate`` call, dropping the rows
        that have finished between calls.

        Why not one ``generate`` call: it keeps computing every row until the longest one
        stops, and reasoning lengths are heavy-tailed (the testbed's base model: mean 93
        tokens, batch maximum 448), so most of the work went to rows that had already
        ended. Between calls the finished rows leave the KV cache
        (``Cache.batch_select_indices``) and each remaining row keeps its own sampling
        generator, so every completion is token for token what one call would produce
        (tested). On the testbed's base model: 4.3x the speed of transformers' own sampling
        (``benchmarks/generation_speed.py``).
        """
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        ids, mask = left_pad([r.prompt_ids for r in batch], self.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        processors = LogitsProcessorList()
        sampler = None
        if params.temperature > 0:
            seeds = [sample_seed(params.seed, r.prompt_ids, r.sample_index) for r in batch]
            sampler = _PerRowSampler(seeds, params.temperature, params.top_p)
            processors.append(sampler)
        alive = list(range(len(batch)))  # batch rows in the cache, in cache order
        done: set[int] = set()  # rows that produced end-of-sequence
        generated: list[list[int]] = [[] for _ in batch]
        cache = None
        gen_cfg = GenerationConfig(
            do_sample=False,  # sampling, when asked, happens in _PerRowSampler
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
            # Explicit neutral values: the checkpoint's generation_config.json would
            # otherwise fill them in (warnings, or a repetition penalty nobody asked for).
            temperature=1.0,
            top_p=1.0,
            top_k=50,
            repetition_penalty=1.0,
        )
        cache_kw = _cache_kwarg()
        chunk = EVICT_EVERY
        left = params.max_new_tokens
        while left > 0:
            gen_cfg.max_new_tokens = min(chunk, left)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=gen_cfg,
                    logits_processor=processors,
                    **{cache_kw: cache},
                )
            new = out.sequences[:, ids.shape[1] :]
            left -= new.shape[1]
            for j, row in enumerate(new.tolist()):
                if alive[j] not in done:
                    generated[alive[j]].extend(row)
                    if self.eos_token_ids.intersection(row):
                        done.add(alive[j])
            keep = [j for j, r in enumerate(alive) if r not in done]
            if not keep or left <= 0:
                break
            ids = out.sequences
            mask = torch.cat([mask, torch.ones_like(new)], dim=1)
            cache = getattr(out, cache_kw)
            if len(keep) == len(alive):
                continue
            if not cache_can_drop_rows(cache):
                # Static or linear-attention caches cannot drop rows: finish in one call (the
                # finished rows run on; what they produce after their end is ignored).
                chunk = left
                continue
            index = torch.tensor(keep, device=ids.device)
            ids, mask = ids[index], mask[index]
            cache.batch_select_indices(index)
            if sampler is not None:
                sampler.select_rows(keep)
            alive = [alive[j] for j in keep]
        completions = []
        for row in generated:
            token_ids, finished = cut_at_eos(row, self.eos_token_ids, self.pad_token_id)
            completions.append(Completion(self.decode(token_ids), token_ids, finished))
        return completions

    def generate_requests(
        self, requests: list[Request], params: SamplingParams, progress: bool = True
    ) -> list[Completion]:
        from tqdm.auto import tqdm

        params.validate()
        # Longest first: similar lengths share a batch (less padding) and an out-of-memory
        # error shows up on the first batch rather than after an hour.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
        results: list[Completion | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not progress)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, c in zip(idx, self._generate_batch([requests[i] for i in idx], params)):
                results[i] = c
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]
