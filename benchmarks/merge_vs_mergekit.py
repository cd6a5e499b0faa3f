"""Benchmark: `merge.selective` against `mergekit-yaml` (ties) and a plain streaming pass.

    python benchmarks/merge_vs_mergekit.py [--layers 14] [--runs 3] [--skip_mergekit]

Generates a Llama pair of about 300M parameters in bf16, sharded (hidden 1024, MLP 4096,
14 layers, vocab 32000, untied embeddings; tuned = base + N(0, 1e-3)), cached under
``runs/bench/`` so reruns reuse it. Then runs, each as its own subprocess measured by
``benchmarks/_measure.py`` (wall time, user and system CPU time, minor page faults, peak
RSS, and the CPU that other processes used meanwhile):

1. ``python -m merge.selective`` per-tensor scope (density 0.25, scale 0.7), its defaults;
2. the same with ``--scope global``;
3. the same as 1 with ``--threads 1`` (what to pass on a busy shared machine);
4. a plain streaming pass (read both, write base + 0.7 * delta, no selection): the I/O
   floor (``benchmarks/_plain_pass.py``);
5. ``mergekit-yaml`` with ``ties`` (one model, density 0.25, weight 1, lambda 0.7,
   normalize/rescale false, dtype float32, out_dtype bfloat16): the same merge; and again
   with ``OMP_NUM_THREADS=1``.

Every command runs ``--runs`` times, interleaved (the first run of each, then the second
of each, ...), so that a change of load hits them alike; the table shows medians. Ours
also merges a ``--depth_layers`` pair once, to show that peak memory does not grow with
depth. The output says whether the machine was idle: wall times are only comparable on an
idle machine, CPU times and page faults barely move with other load.

Also prints how many entries of our per-tensor output differ from mergekit's (bf16 deltas
tie a lot; mergekit's argsort breaks ties in an unspecified order, we keep the lower
index, so a few tied entries may differ).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "runs" / "bench"
sys.path.insert(0, str(ROOT))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402

OURS = "merge.selective --scope tensor"
OURS_GLOBAL = "merge.selective --scope global"
OURS_ONE = "merge.selective --scope tensor --threads 1"
PLAIN = "plain streaming pass (I/O floor)"
MERGEKIT = "mergekit-yaml ties"
MERGEKIT_ONE = "mergekit-yaml ties, OMP_NUM_THREADS=1"


@dataclass
class BenchmarkArguments:
    """The benchmark's settings."""

    layers: int = arg(14, "decoder layers of the generated pair (14: about 300M parameters)")
    runs: int = arg(3, "interleaved runs of every command; the table shows medians")
    skip_mergekit: bool = arg(False, "do not run mergekit (faster iterations)")
    device: str = arg("cpu", "--device for merge.selective")
    threads: int | None = arg(
        None,
        "--threads for merge.selective in its default rows (unset: its default, the cores available)",
    )
    depth_layers: int = arg(
        4, "also merge a pair this deep once (ours only) to compare peak memory; 0: skip"
    )


def generate_pair(
    folder: Path, layers: int, hidden=1024, inter=4096, vocab=32000, shard_bytes=250_000_000
) -> None:
    """Write base/ and tuned/ (bf16, sharded safetensors + index, config, tiny tokenizer)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    if (folder / "tuned" / "config.json").exists():
        return
    print(f"generating a {layers}-layer bf16 Llama pair under {folder} ...", flush=True)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        tie_word_embeddings=False,
        dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (hidden, hidden),
                p + "self_attn.v_proj.weight": (hidden, hidden),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "mlp.gate_proj.weight": (inter, hidden),
                p + "mlp.up_proj.weight": (inter, hidden),
                p + "mlp.down_proj.weight": (hidden, inter),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    g = torch.Generator().manual_seed(0)
    groups, size = [[]], 0
    for name, shape in shapes.items():
        n = 2 * int(torch.tensor(shape).prod())
        if groups[-1] and size + n > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    tmp = folder.parent / (folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for which in ("base", "tuned"):
        (tmp / which).mkdir(parents=True)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        base_sd, tuned_sd = {}, {}
        for name in group:
            shape = shapes[name]
            if name.endswith("norm.weight"):
                b = 1 + 0.05 * torch.randn(shape, generator=g)
            else:
                b = 0.02 * torch.randn(shape, generator=g)
            base_sd[name] = b.bfloat16()
            tuned_sd[name] = (b + 1e-3 * torch.randn(shape, generator=g)).bfloat16()
            weight_map[name] = fname
            total += 2 * b.numel()
        save_file(base_sd, tmp / "base" / fname, metadata={"format": "pt"})
        save_file(tuned_sd, tmp / "tuned" / fname, metadata={"format": "pt"})
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CORPUS

    from testbed.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=300)
    for which in ("base", "tuned"):
        cfg.save_pretrained(tmp / which)
        tok.save_pretrained(tmp / which)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / which / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def measure(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "_measure.py"), "--", *cmd],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, **(env or {})},
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{res['stderr_tail']}")
    return res


def medians(runs: list[dict]) -> dict:
    """The median of every figure over a command's runs."""
    keys = ("wall_s", "cpu_s", "user_s", "sys_s", "minor_faults", "peak_rss_mb")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def idle_verdict(all_runs: list[dict]) -> str:
    """Whether the machine was idle: CPU that other processes used during our runs (from
    /proc/stat) and the load average before the first run, against the cores."""
    cores = all_runs[0]["cores"]
    others = [r["others_cores"] for r in all_runs if r["others_cores"] is not None]
    load = all_runs[0]["load_before"]
    if others:
        busy = statistics.median(others)
        idle = busy < 0.1 * cores and max(others) < 0.25 * cores
        detail = (
            f"other processes used a median {busy:.2f} (max {max(others):.2f}) of "
            f"{cores} cores during the runs; load average before them {load:.2f}"
        )
    else:
        idle = load < 0.1 * cores
        detail = f"load average {load:.2f} before the runs on {cores} cores"
    verdict = (
        "idle" if idle else "NOT idle: wall times include waiting for the CPU, compare CPU times"
    )
    return f"machine {verdict} ({detail})"


def compare(ours: Path, theirs: Path) -> tuple[int, int, float]:
    """(entries differing, total entries, max |difference|) between two merged models."""
    from safetensors import safe_open

    def files(folder):
        index = folder / "model.safetensors.index.json"
        if index.exists():
            return json.loads(index.read_text())["weight_map"]
        return {name: "model.safetensors" for name in _header(folder / "model.safetensors")}

    a_idx, b_idx = files(ours), files(theirs)
    diff = total = 0
    worst = 0.0
    for name, fa in a_idx.items():
        with safe_open(ours / fa, "pt") as f:
            a = f.get_tensor(name)
        with safe_open(theirs / b_idx[name], "pt") as f:
            b = f.get_tensor(name)
        ne = a != b
        diff += int(ne.sum())
        total += a.numel()
        if ne.any():
            worst = max(worst, float((a.float() - b.float()).abs().max()))
    return diff, total, worst


def _commands(args: BenchmarkArguments, base: Path, tuned: Path, outs: Path) -> dict:
    py = sys.executable
    sel = [py, "-m", "merge.selective", "--base", str(base), "--tuned", str(tuned)]
    sel += ["--force", "--device", args.device]
    threads = ["--threads", str(args.threads)] if args.threads else []
    commands = {
        OURS: (sel + threads + ["--out", str(outs / "tensor")], None),
        OURS_GLOBAL: (sel + threads + ["--out", str(outs / "global"), "--scope", "global"], None),
        OURS_ONE: (sel + ["--out", str(outs / "tensor1"), "--threads", "1"], None),
        PLAIN: (
            [py, "benchmarks/_plain_pass.py", "--base", str(base), "--tuned", str(tuned)]
            + ["--out", str(outs / "plain")],
            None,
        ),
    }
    if not args.skip_mergekit:
        recipe = outs / "ties.yaml"
        recipe.write_text(
            f"merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {tuned}\n"
            "    parameters:\n      density: 0.25\n      weight: 1.0\n"
            "parameters:\n  normalize: false\n  rescale: false\n  lambda: 0.7\n"
            "dtype: float32\nout_dtype: bfloat16\n"
        )
        mk = [shutil.which("mergekit-yaml") or "mergekit-yaml", str(recipe), str(outs / "mergekit")]
        commands[MERGEKIT] = (mk, None)
        commands[MERGEKIT_ONE] = (mk, {"OMP_NUM_THREADS": "1"})
    return commands


def _depth_check(args: BenchmarkArguments, outs: Path) -> dict[str, dict]:
    """Ours on a shallower pair, once per scope: peak RSS should not depend on depth."""
    pair = BENCH / f"llama_{args.depth_layers}l_bf16"
    generate_pair(pair, args.depth_layers)
    sel = [sys.executable, "-m", "merge.selective", "--base", str(pair / "base")]
    sel += ["--tuned", str(pair / "tuned"), "--force", "--device", args.device]
    sel += ["--threads", str(args.threads)] if args.threads else []
    return {
        scope: measure(sel + ["--out", str(outs / f"depth_{scope}"), "--scope", scope])
        for scope in ("tensor", "global")
    }


def _table(results: dict[str, dict]) -> None:
    ref = results[OURS]
    print(
        "| run | wall (s) | user (s) | sys (s) | CPU (s) | minor faults | peak RSS (MB) "
        "| wall / ours | CPU / ours | RSS / ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['wall_s']:.2f} | {r['user_s']:.2f} | {r['sys_s']:.2f} | "
            f"{r['cpu_s']:.2f} | {r['minor_faults'] / 1e3:.0f}k | {r['peak_rss_mb']:.0f} | "
            f"{r['wall_s'] / ref['wall_s']:.2f}x | {r['cpu_s'] / ref['cpu_s']:.2f}x | "
            f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x |"
        )


def _ratios(results: dict[str, dict]) -> None:
    ours, glob, plain = results[OURS], results[OURS_GLOBAL], results[PLAIN]
    for what, key in (("wall time", "wall_s"), ("CPU time", "cpu_s")):
        line = (
            f"{what}: ours (tensor) / plain pass {ours[key] / plain[key]:.2f}x, "
            f"global / tensor {glob[key] / ours[key]:.2f}x"
        )
        if MERGEKIT in results:
            mk, mk1 = results[MERGEKIT], results[MERGEKIT_ONE]
            line += (
                f", mergekit / ours (tensor) {mk[key] / ours[key]:.1f}x "
                f"({mk1[key] / ours[key]:.1f}x against mergekit on one thread), "
                f"mergekit / ours (global) {mk[key] / glob[key]:.1f}x"
            )
        print(line)
    if MERGEKIT in results:
        mk = results[MERGEKIT]["peak_rss_mb"]
        print(
            f"peak RSS: ours (tensor, global) / mergekit {ours['peak_rss_mb'] / mk:.2f}, "
            f"{glob['peak_rss_mb'] / mk:.2f}"
        )


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchmarkArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [BenchmarkArguments],
        argv,
        prog="benchmarks.merge_vs_mergekit",
        description=__doc__.split("\n\n")[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    pair = BENCH / f"llama_{args.layers}l_bf16"
    generate_pair(pair, args.layers)
    base, tuned, outs = pair / "base", pair / "tuned", BENCH / "outputs"
    outs.mkdir(parents=True, exist_ok=True)
    n_params = sum(
        int(torch.tensor(v).prod())
        for v in [
            info["shape"]
            for f in sorted(base.glob("*.safetensors"))
            for info in _header(f).values()
        ]
    )
    commands = _commands(args, base, tuned, outs)
    runs: dict[str, list[dict]] = {label: [] for label in commands}
    for i in range(args.runs):  # interleaved: run i of every command, then run i + 1
        for label, (cmd, env) in commands.items():
            if label.startswith("mergekit"):
                shutil.rmtree(outs / "mergekit", ignore_errors=True)
            r = measure(cmd, env)
            runs[label].append(r)
            print(
                f"[{i + 1}/{args.runs}] {label}: {r['wall_s']:.2f} s wall, {r['user_s']:.2f} s "
                f"user + {r['sys_s']:.2f} s sys, {r['minor_faults'] / 1e3:.0f}k faults, "
                f"{r['peak_rss_mb']:.0f} MB; others used {r['others_cores'] or 0:.2f} cores",
                flush=True,
            )
    results = {label: medians(rs) for label, rs in runs.items()}
    depth = _depth_check(args, outs) if args.depth_layers else {}

    print(
        f"\n{n_params / 1e6:.0f}M-parameter bf16 Llama pair, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, medians of {args.runs} interleaved runs; "
        + idle_verdict([r for rs in runs.values() for r in rs])
        + "\n"
    )
    _table(results)
    print()
    _ratios(results)
    if depth:
        print(
            "peak RSS by depth (ours): "
            + ", ".join(
                f"{scope} {depth[scope]['peak_rss_mb']:.0f} MB at {args.depth_layers} layers, "
                f"{results[OURS if scope == 'tensor' else OURS_GLOBAL]['peak_rss_mb']:.0f} MB "
                f"at {args.layers}"
                for scope in ("tensor", "global")
            )
        )
    if MERGEKIT in results:
        diff, total, worst = compare(outs / "tensor", outs / "mergekit")
        print(
            f"entries of our tensor-scope output that differ from mergekit's: {diff} of {total} "
            f"({diff / total:.2e}; max |diff| {worst:.3g}; tie order at the threshold)"
        )
    return 0


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
