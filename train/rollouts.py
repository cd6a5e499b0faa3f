"""RL rollouts without padding waste: ``model.generate`` that takes finished rows out of the
batch, token for token what ``model.generate`` returns under the same seed.

Why hand-written: transformers' ``generate`` (and so TRL's non-vLLM GRPO generation) runs
every row of a batch until the longest one ends; a row that finished early keeps paying a
full forward per step for the padding it emits. Reasoning lengths are heavy-tailed, so most
of a rollout batch's work goes to rows that have already ended. ``generate`` has no way to
drop rows, so `generate_evicting` replaces only its decoding loop: it calls
``model.generate`` with ``custom_generate=`` our loop, and transformers still prepares
everything else (generation config, logits processors and warpers, stopping criteria, KV
cache, attention mask and position ids) exactly as for its own ``_sample``. Every
``evict_every`` steps the rows that have finished leave the KV cache
(``Cache.batch_select_indices``, as `evals.hf_backend.HFBackend` does between its chunks).
The prompt's forward (prefill) runs once per distinct prompt and is copied to the rows that
repeat it (GRPO's batch holds each prompt ``num_generations`` times):
`_prefill_once_per_prompt`.

Why the samples stay identical: ``torch.multinomial(probs, 1)`` (what ``_sample`` calls) is
implemented in ATen (``Distributions.cpp``'s one-sample fast path, which CPU and CUDA share) as
``argmax(probs / q)`` with ``q = torch.empty_like(probs).exponential_(1)`` drawn from the
global generator. Our loop draws ``q`` for the FULL batch shape ``[B, V]`` at every step,
from the same generator, and uses only the rows still in the batch: the random numbers
consumed, and each row's share of them, are those of the un-evicted ``generate``, so every
row samples the same token as long as its logits are the same numbers. They are on CPU
(a row's forward does not depend on the other rows of the batch; tested) but need not be on
GPUs, where a smaller batch can select a different matmul kernel: ``test_cuda`` in
``tests/test_train_rollouts.py`` checks it where there is a GPU (none was available here).
The generator ends in the same state too, so whatever draws from it next (the next
rollout, dropout in training) is unchanged.

Anything this loop does not reproduce exactly falls back to the stock loop before any work
is done: beam search and the other non-sampling modes, ``synced_gpus`` (ZeRO-3 / FSDP over
several processes), scores / attentions / hidden states in the output, encoder-decoder
models, Apple ``mps`` (its ``generate`` defers the stop check by one step), logits
processors not known to act row by row, model inputs we cannot select rows of. Rows are
never evicted when there is no end-of-sequence criterion (rows then do not emit padding),
when the KV cache cannot drop rows (static or linear-attention caches), or when the model's
forward draws random numbers itself (dropout in training mode: its draws depend on the
batch shape).
"""

from __future__ import annotations

import contextlib
import functools

import torch

# EVICT_EVERY, steps between evictions: each copies the whole KV cache, so not every step; a
# finished row wastes at most this many forwards. The evaluation backend's value.
from evals.hf_backend import EVICT_EVERY

# Logits processors and warpers that transform each row from that row's ids and scores alone,
# with no state across rows: applying them to the rows still in the batch gives those rows'
# results of the whole batch.
_ROW_WISE_PROCESSORS = frozenset(
    {
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "TopHLogitsWarper",
        "MinPLogitsWarper",
        "TypicalLogitsWarper",
        "EpsilonLogitsWarper",
        "EtaLogitsWarper",
        "RepetitionPenaltyLogitsProcessor",
        "NoRepeatNGramLogitsProcessor",
        "MinLengthLogitsProcessor",
        "MinNewTokensLengthLogitsProcessor",
        "SequenceBiasLogitsProcessor",
        "NoBadWordsLogitsProcessor",
        "SuppressTokensLogitsProcessor",
        "SuppressTokensAtBeginLogitsProcessor",
        "ForcedBOSTokenLogitsProcessor",
        "ForcedEOSTokenLogitsProcessor",
        "ExponentialDecayLengthPenalty",
        "InfNanRemoveLogitsProcessor",
        "LogitNormalization",
    }
)

# Per-row state of those processors (generate gives the repetition penalty each row's
# padding length): it leaves with its rows.
_ROW_STATE = {"RepetitionPenaltyLogitsProcessor": ("prompt_ignore_length",)}

# Per-row model inputs that `generate` keeps between steps (batch first, sequence last);
# any other tensor input disables eviction.
_ROW_INPUTS = ("attention_mask", "position_ids", "token_type_ids", "mm_token_type_ids")


class _StockLoop(Exception):
    """Raised by `_evicting_sample` before it does any work: run transformers' own loop."""


def generate_evicting(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    generation_config=None,
    evict_every: int = EVICT_EVERY,
    **kwargs,
):
    """What ``model.generate(input_ids=..., attention_mask=..., generation_config=...,
    **kwargs)`` returns (same tensor: prompt and completion ids, same width, finished rows
    padded with ``pad_token_id``), computed without the rows that have finished: every
    ``evict_every`` steps they leave the batch. Same random numbers drawn, so the same
    samples under the same seed (see the module docstring). ``evict_every <= 0`` or an
    unsupported setting runs the stock ``generate``.
    """
    stock = functools.partial(
        type(model).generate,  # the class's: `evicting_generate` may patch the instance's
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=generation_config,
        **kwargs,
    )
    if evict_every <= 0 or kwargs.get("streamer") is not None or kwargs.get("logits_processor"):
        # a streamer wants every row's tokens; processors passed in would have their per-row
        # state cut to the rows left (those generate builds are built for this call)
        return stock()
    try:
        return stock(custom_generate=_evicting_sample, evict_every=evict_every)
    except _StockLoop:
        return stock()


@contextlib.contextmanager
def evicting_generate(model, evict_every: int = EVICT_EVERY):
    """Within the block, ``model.generate`` is `generate_evicting` (for code that calls
    ``model.generate`` itself, such as TRL's ``GRPOTrainer``). A model whose instance has
    its own ``generate`` (a Hub repo's ``custom_generate``) keeps it."""
    if "generate" in vars(model):
        yield model
        return
    model.generate = functools.partial(generate_evicting, model, evict_every=evict_every)
    try:
        yield model
    finally:
        del model.generate


def _stock_reason(model, logits_processor, generation_config, synced_gpus, model_kwargs):
    """Why the evicting loop cannot reproduce this ``generate`` call, or None."""
    from transformers.generation.configuration_utils import GenerationMode

    mode = generation_config.get_generation_mode()
    if mode not in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH):
        return f"generation mode {mode}"
    if synced_gpus:
        return "synced_gpus"
    if model.config.is_encoder_decoder:
        return "encoder-decoder model"
    if generation_config.return_dict_in_generate:
        return "return_dict_in_generate"
    if model.device.type == "mps":
        return "mps (deferred stop check)"
    for p in logits_processor:
        if type(p).__name__ not in _ROW_WISE_PROCESSORS:
            return f"logits processor {type(p).__name__}"
    for key, value in model_kwargs.items():
        if isinstance(value, torch.Tensor) and key not in _ROW_INPUTS:
            return f"model input {key}"
    position_ids = model_kwargs.get("position_ids")
    if position_ids is not None and position_ids.dim() != 2:
        return "position ids that are not 2-D"
    return None


def _synced_gpus(model) -> bool:
    """transformers' default for ``synced_gpus`` (``custom_generate`` does not receive it)."""
    from transformers.generation.utils import (
        _get_torch_distributed_world_size,
        is_deepspeed_zero3_enabled,
        is_fsdp_managed_module,
    )

    return (is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model)) and (
        _get_torch_distributed_world_size() > 1
    )


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    """The global generators a forward on ``device`` could draw from."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_states(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)


def _can_drop_rows(cache) -> bool:
    """Whether this KV cache can drop rows (`evals.hf_backend.cache_can_drop_rows`, the
    evaluation backend's check). No cache: nothing to drop."""
    from evals.hf_backend import cache_can_drop_rows

    return cache is None or cache_can_drop_rows(cache)


def _evicting_sample(
    model,
    input_ids: torch.LongTensor,
    logits_processor,
    stopping_criteria,
    generation_config,
    evict_every: int = EVICT_EVERY,
    **model_kwargs,
) -> torch.LongTensor:
    """transformers' ``GenerationMixin._sample`` (5.x) for the sampling and greedy modes, with
    finished rows evicted every ``evict_every`` steps. Called by ``generate`` (as
    ``custom_generate``) with everything prepared; the comments mark where it departs."""
    if _stock_reason(model, logits_processor, generation_config, _synced_gpus(model), model_kwargs):
        raise _StockLoop  # nothing done yet: generate_evicting reruns the stock generate
    pad_token_id = generation_config._pad_token_tensor
    has_eos_stopping_criteria = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    do_sample = generation_config.do_sample
    batch_size = input_ids.shape[0]
    if pad_token_id is not None:
        pad_token_id = pad_token_id.to(input_ids.device)
    unfinished_sequences = torch.ones(batch_size, dtype=torch.long, device=input_ids.device)
    model_forward = (
        model.get_compiled_call(generation_config.compile_config)
        if model._valid_auto_compile_criteria(model_kwargs, generation_config)
        else model.__call__
    )

    # departs: the batch rows still in the batch (cache order) and each step's new tokens of
    # the whole batch, padding for rows that have left
    rows = torch.arange(batch_size, device=input_ids.device)
    prompt, steps = input_ids, []

    rng_before = _rng_states(input_ids.device)
    outputs = _prefill_once_per_prompt(model, input_ids, generation_config, model_kwargs)
    # departs: rows may leave only if the forward drew no random numbers (dropout in training
    # draws per row of the batch) and the cache can drop rows
    evict = (
        has_eos_stopping_criteria
        and evict_every > 0
        and all(torch.equal(a, b) for a, b in zip(rng_before, _rng_states(input_ids.device)))
        and _can_drop_rows(outputs.get("cache"))
    )
    prefill_consumed = False
    step = 0
    with model._optimize_model_for_decode():
        while True:
            if prefill_consumed:
                next_sequence_length = 1 if model_kwargs["use_cache"] else None
                model_inputs = model.prepare_inputs_for_generation(
                    input_ids, next_sequence_length=next_sequence_length, **model_kwargs
                )
                outputs = model_forward(**model_inputs, return_dict=True)
            prefill_consumed = True
            model_kwargs = model._update_model_kwargs_for_generation(
                outputs, model_kwargs, is_encoder_decoder=False
            )
            next_token_logits = outputs.logits[:, -1].to(
                copy=True, dtype=torch.float32, device=input_ids.device
            )
            next_token_scores = logits_processor(input_ids, next_token_logits)
            if do_sample:
                probs = torch.nn.functional.softmax(next_token_scores, dim=-1)
                next_tokens = _multinomial_rows(probs, rows, batch_size)  # departs: see there
            else:
                next_tokens = torch.argmax(next_token_scores, dim=-1)
            if has_eos_stopping_criteria:
                next_tokens = next_tokens * unfinished_sequences + pad_token_id * (
                    1 - unfinished_sequences
                )
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
            unfinished_sequences = unfinished_sequences & ~stopping_criteria(input_ids, None)
            # departs: this step's tokens of the whole batch
            if len(rows) < batch_size:
                full = next_tokens.new_full((batch_size,), int(pad_token_id))
                next_tokens = full.index_copy_(0, rows, next_tokens)
            steps.append(next_tokens)
            del outputs
            if unfinished_sequences.max() == 0:
                break
            step += 1
            # departs: every `evict_every` steps the finished rows leave the batch
            if evict and step % evict_every == 0 and not bool(unfinished_sequences.all()):
                _drop_finished(unfinished_sequences, model_kwargs, logits_processor)
                keep = unfinished_sequences.nonzero().squeeze(1)
                rows, input_ids = rows[keep], input_ids[keep]
                unfinished_sequences = unfinished_sequences[keep]
    return torch.cat([prompt, torch.stack(steps, dim=1)], dim=-1)


def _prefill_once_per_prompt(model, input_ids, generation_config, model_kwargs):
    """``model._prefill`` (the prompt's forward, filling the KV cache), computed once per
    distinct prompt row and copied to the rows that repeat it.

    GRPO samples each prompt ``num_generations`` times, so a rollout batch holds every
    prompt that many times over (TRL repeats them in the batch); the stock prefill computes
    each copy. A row's forward does not depend on the other rows of the batch (on CPU; see
    the module docstring), so the copies get the same keys, values and logits bit for bit
    (tested against ``generate``). Falls back to the plain prefill when no row repeats,
    with chunked prefill, with a cache that holds something already or cannot select
    rows, and when the forward drew random numbers (dropout in training mode: the random
    stream depends on the batch shape), which is undone and recomputed in full.
    """
    first_iteration = not generation_config.is_assistant
    n = input_ids.shape[0]
    cache = model_kwargs.get("cache")
    if (
        cache is None
        or cache.get_seq_length() != 0
        or not _can_drop_rows(cache)
        or generation_config.prefill_chunk_size is not None
        or model_kwargs.get("inputs_embeds") is not None
    ):
        return model._prefill(input_ids, generation_config, model_kwargs, first_iteration)
    rows = {k: v for k, v in model_kwargs.items() if k in _ROW_INPUTS and _has_rows(v, n)}
    # a row is its prompt ids and its other per-row inputs (the padding mask, ...)
    rows_as_lists = torch.cat([input_ids, *[v.reshape(n, -1) for v in rows.values()]], 1).tolist()
    distinct: dict[tuple, int] = {}
    once, copies = [], []  # the first row of each distinct prompt; each row's prompt
    for i, row in enumerate(map(tuple, rows_as_lists)):
        if row not in distinct:
            distinct[row] = len(once)
            once.append(i)
        copies.append(distinct[row])
    if len(once) == n:
        return model._prefill(input_ids, generation_config, model_kwargs, first_iteration)
    once = torch.tensor(once, device=input_ids.device)
    rng = _rng_states(input_ids.device)  # copies of the generators' states
    outputs = model._prefill(
        input_ids[once],
        generation_config,
        {**model_kwargs, **{k: v[once.to(v.device)] for k, v in rows.items()}},
        first_iteration,
    )
    if not all(torch.equal(a, b) for a, b in zip(rng, _rng_states(input_ids.device))):
        _set_rng_states(rng, input_ids.device)
        cache.reset()
        return model._prefill(input_ids, generation_config, model_kwargs, first_iteration)
    copies = torch.tensor(copies, device=input_ids.device)
    cache.batch_select_indices(copies)
    outputs.logits = outputs.logits[copies.to(outputs.logits.device)]
    return outputs


def _has_rows(value, n: int) -> bool:
    """Whether ``value`` is a tensor with one entry per batch row (``n`` rows)."""
    return isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n


def _drop_finished(unfinished: torch.Tensor, model_kwargs: dict, logits_processor) -> None:
    """Keep only the unfinished rows of the KV cache, the per-row model inputs and the
    per-row state of the logits processors."""
    n = len(unfinished)
    keep = unfinished.nonzero().squeeze(1)
    for key in _ROW_INPUTS:
        value = model_kwargs.get(key)
        if _has_rows(value, n):  # not (1, length) ids
            model_kwargs[key] = value[keep.to(value.device)]
    if model_kwargs.get("cache") is not None:
        model_kwargs["cache"].batch_select_indices(keep)
    for p in logits_processor:
        for name in _ROW_STATE.get(type(p).__name__, ()):
            value = getattr(p, name)
            if _has_rows(value, n):
                setattr(p, name, value[keep.to(value.device)])


def _multinomial_rows(probs: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``torch.multinomial(full_probs, 1).squeeze(1)[rows]`` given only ``full_probs[rows]``.

    ATen's one-sample multinomial is ``argmax(probs / q)``, ``q = empty_like(probs)
    .exponential_(1)``: drawing ``q`` for the whole batch keeps the generator's stream, and
    each row's numbers, those of the un-evicted batch. The same input checks as ATen's
    (asynchronous, as there: no wait for the device).
    """
    ok = (probs.max() < float("inf")) & (probs.min() >= 0)
    torch._assert_async(ok, "probability tensor contains either `inf`, `nan` or element < 0")
    torch._assert_async(
        (probs.sum(1) != 0).all(), "invalid multinomial distribution (sum of probabilities <= 0)"
    )
    q = torch.empty((batch_size, probs.shape[1]), dtype=probs.dtype, device=probs.device)
    q.exponential_(1)
    if len(rows) != batch_size:
        q = q[rows.to(q.device)]
    return (probs / q).argmax(dim=-1)
