"""Generation backends: chat prompts in, completions (text + token ids + finished flag) out.

Two backends share one interface (`Backend`):

- ``"hf"``: transformers ``generate`` in batches of ``batch_size`` sequences, left padding,
  KV cache. Prompts are sorted by length before batching so little padding is computed,
  and rows that have finished leave the batch every ``EVICT_EVERY`` tokens.
- ``"vllm"``: vLLM's offline ``LLM.generate`` (the engine the papers evaluate with,
  docs/algorithms.md §5). vLLM is an optional extra (``pip install shortcot[vllm]``) and
  is imported only when this backend is asked for. `EngineOptions` spread it over GPUs:
  tensor parallelism inside one engine, data parallelism as one engine process per GPU set
  (`ReplicaPool`).

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from artifacts.errors import ShortcotError

if TYPE_CHECKING:
    import torch
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


# Tokens generated per ``generate`` call before finished rows leave the batch (HFBackend).
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


def _can_evict(cache) -> bool:
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

    if dtype in (None, "auto"):
        # bf16/fp16 kernels on CPU are slow and inexact; checkpoints' own dtype on GPU.
        return torch.float32 if device == "cpu" else "auto"
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise ShortcotError(
            f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16"
        ) from None


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
            if not _can_evict(cache):
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


@dataclass
class EngineOptions:
    """How the vLLM engine spreads over GPUs (the vLLM CLI's names; ``--backend vllm`` only).

    tensor_parallel_size:   GPUs one model copy is split over (vLLM's own tensor parallelism).
    data_parallel_size:     independent model copies, each on its own ``tensor_parallel_size``
                            GPUs, each generating a share of the requests. Samples are seeded
                            per request, so the completions do not depend on it.
    gpu_memory_utilization: fraction of each GPU's memory vLLM may take (weights + KV cache).
    max_model_len:          context length the engine reserves KV cache for (prompt +
                            completion); None = the model's own maximum, which for long-context
                            models can leave too little memory for a useful KV cache.
    """

    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None

    @classmethod
    def from_config(cls, cfg) -> EngineOptions:
        """The options of any config object with these field names (``EvalConfig``,
        ``BuildConfig``); fields it lacks keep their defaults."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None})

    def validate(self, backend: str = "vllm") -> None:
        for name in ("tensor_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ShortcotError(
                    f"--{name.replace('_', '-')} must be an integer >= 1, got {value}"
                )
            if backend != "vllm" and value > 1:
                raise ShortcotError(
                    f"--{name.replace('_', '-')} {value} needs --backend vllm; the {backend} "
                    "backend runs one model copy on one device"
                )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ShortcotError(
                f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ShortcotError(f"--max-model-len must be >= 1, got {self.max_model_len}")

    def llm_kwargs(self) -> dict:
        """Keyword arguments of ``vllm.LLM`` for one model copy."""
        kw = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.max_model_len is not None:
            kw["max_model_len"] = self.max_model_len
        return kw


def add_engine_arguments(parser) -> None:
    """The `EngineOptions` flags, for every command that can sample with ``--backend vllm``
    (one definition, so ``evals.run`` and ``distill.build`` spell and document them alike)."""
    d = EngineOptions()
    a = parser.add_argument
    a(
        "--tensor-parallel-size",
        type=int,
        default=d.tensor_parallel_size,
        help="vllm: GPUs one model copy is split over",
    )
    a(
        "--data-parallel-size",
        type=int,
        default=d.data_parallel_size,
        help="vllm: model copies, each on its own --tensor-parallel-size GPUs (of "
        "CUDA_VISIBLE_DEVICES), each generating a share of the samples; results do not depend on it",
    )
    a(
        "--gpu-memory-utilization",
        type=float,
        default=d.gpu_memory_utilization,
        help="vllm: fraction of each GPU's memory the engine may use",
    )
    a(
        "--max-model-len",
        type=int,
        default=d.max_model_len,
        help="vllm: context length to reserve KV cache for (longest prompt + --max-new-tokens); "
        "default: the model's maximum",
    )


def _vllm_generate(llm, payload: list[tuple[list[int], dict]], progress: bool) -> list[tuple]:
    """Run ``llm.generate`` on (prompt ids, sampling kwargs) pairs; returns (token ids,
    finish reason, stop reason) per request. Plain data in and out, so that a replica in
    another process runs exactly the code the in-process engine runs."""
    import vllm

    prompts = [{"prompt_token_ids": ids} for ids, _ in payload]
    sampling = [vllm.SamplingParams(**kw) for _, kw in payload]
    outputs = llm.generate(prompts, sampling_params=sampling, use_tqdm=progress)
    result = []
    for out in outputs:
        o = out.outputs[0]
        stop = o.stop_reason if isinstance(o.stop_reason, int) else None
        result.append((list(o.token_ids), o.finish_reason, stop))
    return result


def _replica_main(conn, llm_kwargs: dict, gpus: str) -> None:
    """One data-parallel replica (a spawned process): pin its GPUs before vLLM is imported,
    load the model, then answer generation requests on ``conn`` until told to stop (None) or
    the parent goes away (EOF)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    try:
        import vllm

        llm = vllm.LLM(**llm_kwargs)
    except Exception as err:  # reported to the parent as one line
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        try:
            conn.send(("ok", _vllm_generate(llm, *msg)))
        except Exception as err:
            conn.send(("error", f"{type(err).__name__}: {err}"))


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else all of them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _stop_replicas(conns, procs) -> None:
    for conn in conns:
        try:
            conn.send(None)
            conn.close()
        except (OSError, ValueError):
            pass
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
            p.join()


class ReplicaPool:
    """``data_parallel_size`` vLLM engines, one process each, on disjoint GPU sets.

    Why processes: a vLLM engine takes the GPUs its process sees, and which GPUs a process
    sees is fixed before CUDA starts, so each copy needs its own process with its own
    ``CUDA_VISIBLE_DEVICES`` (vLLM's offline data-parallel example does the same). Requests
    are dealt round robin (callers sort them by length, so every replica gets a similar mix)
    and the results are put back in request order. The processes stay up between calls
    (the model loads once) and stop when the pool is closed or garbage-collected.
    """

    def __init__(self, llm_kwargs: dict, data_parallel_size: int, tensor_parallel_size: int):
        import multiprocessing
        import weakref

        gpus = visible_gpus()
        need = data_parallel_size * tensor_parallel_size
        if len(gpus) < need:
            raise ShortcotError(
                f"--data-parallel-size {data_parallel_size} x --tensor-parallel-size "
                f"{tensor_parallel_size} needs {need} GPUs, {len(gpus)} visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); lower them"
            )
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        self.conns, self.procs, self.gpus = [], [], []
        for r in range(data_parallel_size):
            share = ",".join(gpus[r * tensor_parallel_size : (r + 1) * tensor_parallel_size])
            parent, child = ctx.Pipe()
            # Not daemonic: vLLM's engine starts processes of its own.
            proc = ctx.Process(target=_replica_main, args=(child, llm_kwargs, share))
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
            self.gpus.append(share)
        self._finalizer = weakref.finalize(self, _stop_replicas, self.conns, self.procs)
        for r, conn in enumerate(self.conns):
            self._receive(r, conn, "loading the model")

    def _receive(self, rank: int, conn, doing: str):
        try:
            status, value = conn.recv()
        except EOFError:
            status, value = "error", f"the process exited (code {self.procs[rank].exitcode})"
        if status == "error":
            self.close()
            raise ShortcotError(
                f"vLLM replica {rank} (GPUs {self.gpus[rank]}) failed {doing}: {value}"
            )
        return value

    def generate(self, payload: list[tuple[list[int], dict]], progress: bool) -> list[tuple]:
        n = len(self.conns)
        for r, conn in enumerate(self.conns):
            conn.send((payload[r::n], progress and r == 0))
        shares = [self._receive(r, c, "generating") for r, c in enumerate(self.conns)]
        result: list = [None] * len(payload)
        for r, share in enumerate(shares):
            result[r::n] = share
        return result

    def close(self) -> None:
        self._finalizer()


class VLLMBackend(Backend):
    """vLLM offline inference (optional extra). ``batch_size`` is unused: vLLM schedules
    sequences itself; callers that checkpoint per chunk decide the chunk size.
    ``engine`` spreads it over GPUs (`EngineOptions`)."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        batch_size: int = 32,
        device: str | None = None,
        dtype: str | None = None,
        engine: EngineOptions | None = None,
    ):
        engine = engine or EngineOptions()
        engine.validate("vllm")
        try:
            import vllm
        except ImportError as err:
            raise ShortcotError(
                "the vllm backend needs vLLM; install it with `pip install shortcot[vllm]` "
                "(GPU machines) or use --backend hf"
            ) from err
        from transformers import AutoTokenizer

        from artifacts.hub import resolve_local

        path = resolve_local(model)
        self.model_path = path
        self.batch_size = batch_size
        self.engine = engine
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if device not in (None, "cuda"):
            # Recent vLLM picks its device from the platform; GPUs via CUDA_VISIBLE_DEVICES.
            raise ShortcotError(
                f"the vllm backend runs on the GPU (got --device {device}); choose GPUs with "
                "CUDA_VISIBLE_DEVICES, or use --backend hf for other devices"
            )
        llm_kwargs = {"model": str(path), "dtype": dtype or "auto", "seed": 0}
        llm_kwargs.update(engine.llm_kwargs())
        self.llm = self.replicas = None
        if engine.data_parallel_size == 1:
            self.llm = vllm.LLM(**llm_kwargs)
        else:
            self.replicas = ReplicaPool(
                llm_kwargs, engine.data_parallel_size, engine.tensor_parallel_size
            )
        from transformers import GenerationConfig

        try:
            gen_cfg = GenerationConfig.from_pretrained(path)
        except OSError:
            gen_cfg = None
        self.eos_token_ids = _eos_ids(self.tokenizer, gen_cfg)

    def generate_requests(
        self, requests: list[Request], params: SamplingParams, progress: bool = True
    ) -> list[Completion]:
        params.validate()
        limit = self.engine.max_model_len
        longest = max((len(r.prompt_ids) for r in requests), default=0)
        if limit is not None and longest + params.max_new_tokens > limit:
            # vLLM would refuse the request or cut it at the context end, which would count
            # as a truncated completion that the token limit did not cause.
            raise ShortcotError(
                f"a prompt of {longest} tokens plus --max-new-tokens {params.max_new_tokens} "
                f"exceeds --max-model-len {limit}; raise --max-model-len or lower --max-new-tokens"
            )
        payload = [
            (
                r.prompt_ids,
                dict(
                    n=1,
                    temperature=params.temperature,
                    top_p=params.top_p if params.temperature > 0 else 1.0,
                    max_tokens=params.max_new_tokens,
                    seed=sample_seed(params.seed, r.prompt_ids, r.sample_index),
                    stop_token_ids=sorted(self.eos_token_ids),
                    skip_special_tokens=True,
                ),
            )
            for r in requests
        ]
        if self.replicas is not None:
            outputs = self.replicas.generate(payload, progress)
        else:
            outputs = _vllm_generate(self.llm, payload, progress)
        completions = []
        for ids, reason, stop in outputs:
            finished = reason == "stop"
            if finished and (not ids or ids[-1] not in self.eos_token_ids):
                # vLLM may leave the stop token out of token_ids; count it like the HF backend.
                ids.append(stop if stop is not None else min(self.eos_token_ids))
            completions.append(Completion(self.decode(ids), ids, finished))
        return completions

    def close(self) -> None:
        """Stop the data-parallel replicas (a no-op for one in-process engine)."""
        if self.replicas is not None:
            self.replicas.close()


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
