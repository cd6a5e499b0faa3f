"""Sampling speed of the evaluation's HF backend against plain transformers ``generate``.

    python benchmarks/generation_speed.py --model runs/testbed/model \
        --data runs/testbed/data/test.jsonl --problems 256 --batch_size 128

The same prompts (chat template applied, sorted longest first, batches of ``--batch_size``)
and the same settings (T 0.6, top-p 0.95, ``--max_new_tokens``) go through:

* ``transformers``: ``model.generate(do_sample=True)``, one call per batch: what a user
  would write (results then depend on the batch size and order: one global generator);
* ``shortcot, one call``: `evals.hf_backend.HFBackend` with eviction turned off
  (``EVICT_EVERY`` = max tokens): per-sample seeded sampling, one ``generate`` call per batch;
* ``shortcot``: the backend as shipped: finished rows leave the batch every ``EVICT_EVERY``
  tokens.

Variants run ``--repeats`` times interleaved so that load from other processes hits them
alike; the figure is the median wall time. The script also checks that the shipped backend
and the one-call backend produce the same tokens for every sample (they must).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402


@dataclass
class GenerationSpeedArguments:
    """The benchmark's settings."""

    model: str = arg("runs/testbed/model", "HF model folder")
    data: str = arg("runs/testbed/data/test.jsonl", "JSONL with 'problem'")
    problems: int = arg(256, "prompts to sample (1 each)")
    batch_size: int = arg(128, "sequences per batch")
    max_new_tokens: int = arg(448, "token limit")
    repeats: int = arg(3, "interleaved runs per variant")
    threads: int | None = arg(None, "torch threads (default: torch's)")


def parse_args(argv: Sequence[str] | None = None) -> tuple[GenerationSpeedArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [GenerationSpeedArguments],
        argv,
        prog="benchmarks.generation_speed",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)

    import torch
    from transformers import GenerationConfig

    import evals.hf_backend as backends
    from evals.backends import Request, SamplingParams, load_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(args.data)][: args.problems]
    backend = load_backend("hf", args.model, batch_size=args.batch_size, device="cpu")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.6, top_p=0.95)
    requests = [
        Request(backend.prompt_ids([{"role": "user", "content": r["problem"]}])) for r in rows
    ]
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
    shipped_every = backends.EVICT_EVERY

    def plain() -> int:
        """transformers generate(do_sample=True), one call per batch; returns new tokens."""
        tokens = 0
        cfg = GenerationConfig(
            do_sample=True,
            temperature=0.6,
            top_p=0.95,
            top_k=0,
            max_new_tokens=args.max_new_tokens,
            eos_token_id=sorted(backend.eos_token_ids),
            pad_token_id=backend.pad_token_id,
        )
        for start in range(0, len(order), args.batch_size):
            batch = [requests[i].prompt_ids for i in order[start : start + args.batch_size]]
            ids, mask = backends.left_pad(batch, backend.pad_token_id)
            with torch.inference_mode():
                out = backend.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=cfg
                )
            for row in out[:, ids.shape[1] :].tolist():
                tokens += len(
                    backends.cut_at_eos(row, backend.eos_token_ids, backend.pad_token_id)[0]
                )
        return tokens

    outputs: dict[str, list[list[int]]] = {}

    def ours(every: int, name: str):
        def run() -> int:
            backends.EVICT_EVERY = every
            try:
                out = backend.generate_requests(requests, params, progress=False)
            finally:
                backends.EVICT_EVERY = shipped_every
            outputs[name] = [c.token_ids for c in out]
            return sum(c.num_tokens for c in out)

        return run

    variants = {
        "transformers generate": plain,
        "shortcot, one call per batch": ours(args.max_new_tokens, "one"),
        f"shortcot (evict every {shipped_every})": ours(shipped_every, "evict"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, int] = {}
    variants["shortcot, one call per batch"]()  # warm-up (allocator, kernels)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - t0)
    same = outputs["one"] == outputs["evict"]
    base = statistics.median(times["transformers generate"])
    print(
        f"{len(requests)} prompts, batch {args.batch_size}, max {args.max_new_tokens} tokens, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print("| variant | wall (s) | new tokens | tokens/s | speed-up vs transformers |")
    print("|---|---|---|---|---|")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.1f} | {tokens[name]} | {tokens[name] / t:.0f} | {base / t:.2f}x |")
    print(f"eviction changed no token: {same}")
    if not same:
        raise SystemExit("eviction changed the output: this is a bug")
    return 0


if __name__ == "__main__":
    run_cli(main)
