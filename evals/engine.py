"""How a command generates: the backend, its batch, dtype and device, and how the vLLM engine
spreads over GPUs. One dataclass (`EngineOptions`), so every command that samples
(``evals.run``, ``distill.build``) spells, documents and validates these settings alike:
parse it as one of the command's dataclass types (or subclass it, as `evals.run.EvalConfig`
does) and the fields become flags and recipe keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from artifacts.cli import arg
from artifacts.errors import ShortcotError


@dataclass
class EngineOptions:
    """The generation engine and how the vLLM engine spreads over GPUs (the vLLM CLI's
    names for the ``--backend vllm`` fields).

    tensor_parallel_size:   GPUs one model copy is split over (vLLM's own tensor parallelism).
    data_parallel_size:     independent model copies, each on its own ``tensor_parallel_size``
                            GPUs, each generating a share of the requests. Samples are seeded
                            per request, so the completions do not depend on it.
    gpu_memory_utilization: fraction of each GPU's memory vLLM may take (weights + KV cache).
    max_model_len:          context length the engine reserves KV cache for (prompt +
                            completion); None = the model's own maximum, which for long-context
                            models can leave too little memory for a useful KV cache.
    """

    backend: Literal["hf", "vllm"] = arg(
        "hf", "generation engine: hf (transformers) or vllm (optional extra, GPU)"
    )
    batch_size: int = arg(
        32,
        "sequences per generate call (hf); samples are checkpointed after each batch "
        "(vllm schedules its own batches: chunks of at least 512)",
    )
    dtype: str | None = arg(
        None,
        "model dtype: auto, float32, bfloat16, float16 (default: float32 on CPU, the "
        "checkpoint's on GPU)",
    )
    device: str | None = arg(
        None, "device for the hf backend (default: cuda if available, else cpu)"
    )
    tensor_parallel_size: int = arg(1, "vllm: GPUs one model copy is split over")
    data_parallel_size: int = arg(
        1,
        "vllm: model copies, each on its own tensor_parallel_size GPUs (of "
        "CUDA_VISIBLE_DEVICES), each generating a share of the samples; results do not depend on it",
    )
    gpu_memory_utilization: float = arg(
        0.9, "vllm: fraction of each GPU's memory the engine may use"
    )
    max_model_len: int | None = arg(
        None,
        "vllm: context length to reserve KV cache for (longest prompt + max_new_tokens); "
        "default: the model's maximum",
    )

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


# The vLLM fields, as the argparse flags ``add_engine_arguments`` adds (with their types).
_VLLM_FIELDS = {
    "tensor_parallel_size": int,
    "data_parallel_size": int,
    "gpu_memory_utilization": float,
    "max_model_len": int,
}


def add_engine_arguments(parser) -> None:
    """The vLLM `EngineOptions` flags on a hand-written argparse parser.

    Transitional: only for ``distill.build`` until it parses `EngineOptions` as one of its
    dataclass types (then delete this). Help texts and defaults come from the fields.
    """
    fields = {f.name: f for f in dataclasses.fields(EngineOptions)}
    for name, kind in _VLLM_FIELDS.items():
        f = fields[name]
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=f.default, help=f.metadata["help"]
        )
