"""``--backend vllm`` at GPU users' scale, against a stand-in ``vllm`` module that records
what it is given (no vLLM, no GPU here): tensor-parallel size, data-parallel replicas on
disjoint GPUs, GPU memory fraction and max model length reach ``vllm.LLM`` from
``evals.run`` and ``distill.build`` (flags and config files), and data-parallel replicas
give exactly the completions of one engine."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from artifacts.errors import ShortcotError
from artifacts.jsonl import read_jsonl, write_jsonl
from evals.backends import EngineOptions, Request, SamplingParams, load_backend

REPO = Path(__file__).resolve().parents[1]

# The stand-in: ``LLM`` records its keyword arguments, the GPUs its process sees and its
# pid (in ``CALLS`` and, for replicas in other processes, as JSON lines in $FAKE_VLLM_LOG);
# ``generate`` derives each completion from its request's seed alone, as a seeded engine
# would, leaving the stop token out of ``token_ids`` the way vLLM does.
FAKE_VLLM = """
import json, os

CALLS = []


def _log(record):
    CALLS.append(record)
    path = os.environ.get("FAKE_VLLM_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\\n")


class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class _Completion:
    def __init__(self, token_ids, finish_reason, stop_reason):
        self.token_ids, self.finish_reason, self.stop_reason = token_ids, finish_reason, stop_reason


class _Output:
    def __init__(self, completion):
        self.outputs = [completion]


class LLM:
    def __init__(self, **kwargs):
        if os.environ.get("FAKE_VLLM_FAIL"):
            raise RuntimeError("CUDA out of memory")
        self.kwargs = kwargs
        _log({"event": "init", "kwargs": kwargs, "pid": os.getpid(),
              "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")})

    def generate(self, prompts, sampling_params, use_tqdm=True):
        _log({"event": "generate", "n": len(prompts), "pid": os.getpid()})
        outs = []
        for prompt, sp in zip(prompts, sampling_params):
            assert isinstance(prompt["prompt_token_ids"], list)
            kw = sp.kw
            seed, limit = kw["seed"], kw["max_tokens"]
            length = seed % (limit + 3) + 1
            ids = [10 + (seed >> (3 * k)) % 20 for k in range(min(length - 1, limit))]
            if length <= limit:  # the stop token is the length-th
                outs.append(_Output(_Completion(ids, "stop", kw["stop_token_ids"][0])))
            else:
                outs.append(_Output(_Completion(ids, "length", None)))
        return outs
"""

PROBLEMS = [
    {"id": f"p{i}", "problem": f"Add the digits mod 10: a {i} b 5", "answer": str((i + 5) % 10)}
    for i in range(5)
]


@pytest.fixture
def fake_vllm(monkeypatch):
    """The stand-in injected as ``vllm`` through ``sys.modules`` (in-process engines)."""
    module = types.ModuleType("vllm")
    exec(FAKE_VLLM, module.__dict__)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture
def fake_vllm_package(tmp_path, monkeypatch):
    """The stand-in as an importable package, for replica processes (which import afresh):
    on sys.path here and on PYTHONPATH for spawned children; returns its log file."""
    pkg = tmp_path / "fake_vllm_pkg"
    (pkg / "vllm").mkdir(parents=True)
    (pkg / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    log = tmp_path / "vllm_log.jsonl"
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.syspath_prepend(str(pkg))
    paths = [str(pkg), str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    return log


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    write_jsonl(path, PROBLEMS)
    return path


def test_evals_run_passes_engine_options_to_vllm(fake_vllm, tiny_model_dir, data_file, tmp_path):
    from evals import run as run_cli

    out = tmp_path / "eval"
    argv = ["--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out),
            "--grader", "testbed", "--backend", "vllm", "--samples", "2", "--max-new-tokens", "6",
            "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.55",
            "--max-model-len", "4096", "--no-progress"]  # fmt: skip
    assert run_cli.main(argv) == 0
    (init,) = [c for c in fake_vllm.CALLS if c["event"] == "init"]
    assert init["kwargs"] == {
        "model": str(tiny_model_dir),
        "dtype": "auto",
        "seed": 0,
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.55,
        "max_model_len": 4096,
    }
    recs = list(read_jsonl(out / "samples.jsonl"))
    assert len(recs) == 10
    # stopped completions end with the stop token vLLM left out; the rest hit the limit
    assert {r["truncated"] for r in recs} == {True, False}
    assert all(r["tokens"] <= 6 for r in recs)
    settings = json.loads((out / "settings.json").read_text())["all"]
    assert (settings["tensor_parallel_size"], settings["max_model_len"]) == (4, 4096)

    # the same keys from a config file; defaults leave max_model_len to vLLM
    fake_vllm.CALLS.clear()
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text("backend: vllm\ntensor_parallel_size: 2\ngpu_memory_utilization: 0.7\n")
    argv = ["--config", str(cfg), "--model", str(tiny_model_dir), "--data", str(data_file),
            "--out", str(tmp_path / "eval2"), "--grader", "testbed", "--max-new-tokens", "6",
            "--no-progress"]  # fmt: skip
    assert run_cli.main(argv) == 0
    (init,) = [c for c in fake_vllm.CALLS if c["event"] == "init"]
    assert init["kwargs"]["tensor_parallel_size"] == 2
    assert init["kwargs"]["gpu_memory_utilization"] == 0.7
    assert "max_model_len" not in init["kwargs"]


def test_distill_build_passes_engine_options_to_vllm(
    fake_vllm, tiny_model_dir, data_file, tmp_path
):
    from distill.build import build, parse_args

    cfg = parse_args(["--teacher", str(tiny_model_dir), "--data", str(data_file),
                      "--out", str(tmp_path / "ds"), "--grader", "testbed", "--backend", "vllm",
                      "--samples", "2", "--max-new-tokens", "6", "--tensor-parallel-size", "2",
                      "--gpu-memory-utilization", "0.8", "--max-model-len", "2048"])  # fmt: skip
    with pytest.raises(ShortcotError, match="no example survived"):  # random tokens: none correct
        build(*cfg)
    (init,) = [c for c in fake_vllm.CALLS if c["event"] == "init"]
    assert init["kwargs"]["tensor_parallel_size"] == 2
    assert init["kwargs"]["gpu_memory_utilization"] == 0.8
    assert init["kwargs"]["max_model_len"] == 2048
    assert sum(c["n"] for c in fake_vllm.CALLS if c["event"] == "generate") == 10


def test_data_parallel_replicas_match_one_engine(
    fake_vllm_package, tiny_model_dir, tiny_tokenizer, monkeypatch
):
    """Two replicas of two GPUs each, in their own processes on disjoint GPUs, give
    exactly the completions of one in-process engine, in request order."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6,7")
    prompts = [tiny_tokenizer(f"problem {i}")["input_ids"] for i in range(7)]
    reqs = [Request(p, k) for p in prompts for k in range(3)]
    params = SamplingParams(max_new_tokens=8, temperature=0.6, seed=11)

    one = load_backend("vllm", str(tiny_model_dir))
    expected = one.generate_requests(reqs, params, progress=False)
    fake_vllm_package.unlink()

    dp = load_backend(
        "vllm",
        str(tiny_model_dir),
        engine=EngineOptions(tensor_parallel_size=2, data_parallel_size=2),
    )
    got = dp.generate_requests(reqs, params, progress=False)
    again = dp.generate_requests(reqs[:5], params, progress=False)  # the engines stay up
    procs = dp.replicas.procs
    dp.close()

    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert [c.finished for c in got] == [c.finished for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.token_ids for c in again] == [c.token_ids for c in expected[:5]]
    assert {c.finished for c in got} == {True, False}
    log = list(read_jsonl(fake_vllm_package))
    inits = [r for r in log if r["event"] == "init"]
    assert sorted(r["gpus"] for r in inits) == ["3,4", "5,6"]
    assert len({r["pid"] for r in inits}) == 2 and os.getpid() not in {r["pid"] for r in inits}
    assert all(r["kwargs"]["tensor_parallel_size"] == 2 for r in inits)
    gens = [r for r in log if r["event"] == "generate"]
    assert sorted(r["n"] for r in gens) == [2, 3, 10, 11]  # each call dealt to both replicas
    assert all(p.exitcode == 0 for p in procs)  # closed cleanly


def test_engine_option_errors(fake_vllm_package, tiny_model_dir, monkeypatch, tmp_path):
    with pytest.raises(ShortcotError, match="--tensor-parallel-size 2 needs --backend vllm"):
        load_backend("hf", str(tiny_model_dir), engine=EngineOptions(tensor_parallel_size=2))
    with pytest.raises(ShortcotError, match="gpu-memory-utilization must be in"):
        load_backend("vllm", str(tiny_model_dir), engine=EngineOptions(gpu_memory_utilization=1.5))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ShortcotError, match="needs 6 GPUs, 2 visible"):
        load_backend(
            "vllm",
            str(tiny_model_dir),
            engine=EngineOptions(tensor_parallel_size=2, data_parallel_size=3),
        )
    # a replica that cannot load the model: one line naming the replica, its GPUs, the cause
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    with pytest.raises(ShortcotError, match="replica 0 \\(GPUs 0\\) failed loading the model: "):
        load_backend("vllm", str(tiny_model_dir), engine=EngineOptions(data_parallel_size=2))
    monkeypatch.delenv("FAKE_VLLM_FAIL")
    # a prompt that cannot fit the context with its completion fails before generating
    b = load_backend("vllm", str(tiny_model_dir), engine=EngineOptions(max_model_len=20))
    with pytest.raises(ShortcotError, match="exceeds --max-model-len 20"):
        b.generate_requests([Request(list(range(10, 25)))], SamplingParams(max_new_tokens=8))
    # evals.run refuses a multi-GPU flag with the hf backend before loading anything
    from evals.run import EvalConfig, evaluate

    with pytest.raises(ShortcotError, match="--data-parallel-size 2 needs --backend vllm"):
        evaluate(EvalConfig(model="m", data="d", out=str(tmp_path / "o"), data_parallel_size=2))
