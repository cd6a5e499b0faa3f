"""Generation backends: chat prompts in, completions (text + token ids + finished flag) out.

Two backends share one interface (`evals.generation.Backend`); `load_backend` picks one:

- ``"hf"`` (`evals.hf_backend`): transformers ``generate`` in batches of ``batch_size``
  sequences, left padding, KV cache. Prompts are sorted by length before batching so little
  padding is computed, and rows that have finished leave the batch every ``EVICT_EVERY``
  tokens.
- ``"vllm"`` (`evals.vllm_backend`): vLLM's offline ``LLM.generate`` (the engine the papers
  evaluate with, docs/algorithms.md §5). vLLM is an optional extra (``pip install
  shortcot[vllm]``) and is imported only when this backend is asked for. `EngineOptions`
  (`evals.engine`) spread it over GPUs: tensor parallelism inside one engine, data
  parallelism as one engine process per GPU set (`ReplicaPool`).

Sampling is seeded per sample, not per batch: sample ``k`` of a prompt draws from its own
random generator seeded by ``(seed, prompt token ids, k)`` (`sample_seed`). A sample is
therefore the same whatever the batch size, the order of the prompts or an interruption
and resume in between (up to the last-bit differences of batched float arithmetic), which
is what lets ``evals.run`` resume and still report exactly the numbers of an
uninterrupted run. The HF backend gets this with a logits processor (`_PerRowSampler`)
that draws the token itself and hands greedy decoding a one-hot choice, because
``generate(do_sample=True)`` draws all rows from the one global torch generator; vLLM
supports a seed per request natively.

Truncation is decided from token ids: a completion is ``finished`` when it produced an
end-of-sequence token within ``max_new_tokens``, never from its text.

The names other packages use are importable from here (``from evals.backends import
load_backend, Request, SamplingParams, EngineOptions``).
"""

from __future__ import annotations

import os

from artifacts.errors import ShortcotError
from evals.engine import EngineOptions, add_engine_arguments
from evals.generation import (
    Backend,
    Completion,
    Request,
    SamplingParams,
    cut_at_eos,
    sample_seed,
)
from evals.hf_backend import HFBackend, left_pad
from evals.vllm_backend import ReplicaPool, VLLMBackend, visible_gpus

__all__ = [
    "BACKENDS",
    "Backend",
    "Completion",
    "EngineOptions",
    "HFBackend",
    "ReplicaPool",
    "Request",
    "SamplingParams",
    "VLLMBackend",
    "add_engine_arguments",
    "cut_at_eos",
    "left_pad",
    "load_backend",
    "sample_seed",
    "visible_gpus",
]


BACKENDS = {"hf": HFBackend, "vllm": VLLMBackend}


def load_backend(
    name: str,
    model: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | None = None,
    engine: EngineOptions | None = None,
) -> Backend:
    """Load ``model`` (local folder or Hub id) into the backend called ``name`` (hf | vllm).
    ``engine``: how vLLM spreads over GPUs; with ``hf`` only the defaults (one device) are
    accepted, so a multi-GPU setting is never silently ignored."""
    if name not in BACKENDS:
        raise ShortcotError(f"unknown backend {name!r}; use one of {sorted(BACKENDS)}")
    if name == "vllm":
        return VLLMBackend(
            str(model), batch_size=batch_size, device=device, dtype=dtype, engine=engine
        )
    (engine or EngineOptions()).validate(name)
    return BACKENDS[name](str(model), batch_size=batch_size, device=device, dtype=dtype)
