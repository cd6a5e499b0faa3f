"""The ``"vllm"`` backend: vLLM's offline ``LLM.generate`` (the engine the papers evaluate
with, docs/algorithms.md §5). vLLM is an optional extra (``pip install shortcot[vllm]``) and
is imported only when this backend is asked for. `EngineOptions` spread it over GPUs:
tensor parallelism inside one engine, data parallelism as one engine process per GPU set
(`ReplicaPool`). vLLM supports a seed per request natively (`evals.generation.sample_seed`).
"""

from __future__ import annotations

import os

from artifacts.errors import ShortcotError
from evals.engine import EngineOptions
from evals.generation import Backend, Completion, Request, SamplingParams, _eos_ids, sample_seed


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
