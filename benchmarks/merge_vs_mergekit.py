"""Benchmark: `merge.selective` against `mergekit-yaml` (ties) and a plain streaming pass.

    python benchmarks/merge_vs_mergekit.py [--layers 14] [--runs 1] [--skip-mergekit]

Generates a Llama pair of about 300M parameters in bf16, sharded (hidden 1024, MLP 4096,
14 layers, vocab 32000, untied embeddings; tuned = base + N(0, 1e-3)), cached under
``runs/bench/`` so reruns reuse it. Then, in one run, each as its own subprocess (wall
time and peak RSS via ``benchmarks/_measure.py``):

1. ``python -m merge.selective`` per-tensor scope (density 0.25, scale 0.7);
2. the same with ``--scope global``;
3. ``mergekit-yaml`` with ``ties`` (one model, density 0.25, weight 1, lambda 0.7,
   normalize/rescale false, dtype float32, out_dtype bfloat16): the same merge;
4. a plain streaming pass (read both, write base + 0.7 * delta, no selection): the I/O floor.

Prints a markdown table with ratios, and how many entries of our per-tensor output
differ from mergekit's (bf16 deltas tie a lot; mergekit's argsort breaks ties in an
unspecified order, we keep the lower index, so a few tied entries may differ).
Timings are sensitive to other load on the machine: run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "runs" / "bench"


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--layers", type=int, default=14, help="decoder layers (14 -> ~300M parameters)")
    p.add_argument(
        "--runs", type=int, default=1, help="repetitions of each command (the best is reported)"
    )
    p.add_argument(
        "--skip-mergekit", action="store_true", help="do not run mergekit (faster iterations)"
    )
    p.add_argument("--device", default="cpu", help="--device for merge.selective")
    args = p.parse_args(argv)

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
    recipe = outs / "ties.yaml"
    recipe.write_text(
        f"merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {tuned}\n"
        "    parameters:\n      density: 0.25\n      weight: 1.0\n"
        "parameters:\n  normalize: false\n  rescale: false\n  lambda: 0.7\n"
        "dtype: float32\nout_dtype: bfloat16\n"
    )
    py = sys.executable
    sel = [
        py,
        "-m",
        "merge.selective",
        "--base",
        str(base),
        "--tuned",
        str(tuned),
        "--force",
        "--device",
        args.device,
    ]
    commands = {
        "merge.selective --scope tensor": sel + ["--out", str(outs / "tensor")],
        "merge.selective --scope global": sel
        + ["--out", str(outs / "global"), "--scope", "global"],
        "plain streaming pass (I/O floor)": [
            py,
            "benchmarks/_plain_pass.py",
            str(base),
            str(tuned),
            str(outs / "plain"),
        ],
    }
    if not args.skip_mergekit:
        mk = [shutil.which("mergekit-yaml") or "mergekit-yaml", str(recipe), str(outs / "mergekit")]
        commands["mergekit-yaml ties"] = mk
        commands["mergekit-yaml ties, OMP_NUM_THREADS=1"] = mk
    results = {}
    for label, cmd in commands.items():
        env = {"OMP_NUM_THREADS": "1"} if label.endswith("OMP_NUM_THREADS=1") else None
        best = None
        for _ in range(args.runs):
            if label.startswith("mergekit"):
                shutil.rmtree(outs / "mergekit", ignore_errors=True)
            r = measure(cmd, env)
            best = r if best is None or r["wall_s"] < best["wall_s"] else best
        results[label] = best
        print(
            f"{label}: {best['wall_s']:.2f} s wall, {best['cpu_s']:.2f} s CPU, "
            f"{best['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    ref = results["merge.selective --scope tensor"]
    print(
        f"\n{n_params / 1e6:.0f}M-parameter bf16 Llama pair, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, best of {args.runs}\n"
    )
    print(
        "| run | wall time (s) | CPU time (s) | peak RSS (MB) | wall / ours (tensor) | RSS / ours (tensor) |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['wall_s'] / ref['wall_s']:.2f}x | {r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x |"
        )
    ref_t, ref_m = ref["wall_s"], ref["peak_rss_mb"]
    if "mergekit-yaml ties" in results:
        mk = results["mergekit-yaml ties"]
        plain = results["plain streaming pass (I/O floor)"]
        glob = results["merge.selective --scope global"]
        mk1 = results.get("mergekit-yaml ties, OMP_NUM_THREADS=1", mk)
        print(
            f"\nwall time: mergekit / ours (tensor) {mk['wall_s'] / ref_t:.1f}x "
            f"({mk1['wall_s'] / ref_t:.1f}x against mergekit on one thread), "
            f"mergekit / ours (global) {mk['wall_s'] / glob['wall_s']:.1f}x; "
            f"ours (tensor) / plain pass {ref_t / plain['wall_s']:.2f}x; "
            f"global / tensor {glob['wall_s'] / ref_t:.2f}x; "
            f"peak RSS ours (tensor, global) / mergekit {ref_m / mk['peak_rss_mb']:.2f}, "
            f"{glob['peak_rss_mb'] / mk['peak_rss_mb']:.2f}"
        )
        print(
            f"CPU time: mergekit / ours (tensor) {mk['cpu_s'] / ref['cpu_s']:.1f}x, "
            f"ours (tensor) / plain {ref['cpu_s'] / plain['cpu_s']:.2f}x, "
            f"global / tensor {glob['cpu_s'] / ref['cpu_s']:.2f}x"
        )
        diff, total, worst = compare(outs / "tensor", outs / "mergekit")
        print(
            f"entries of our tensor-scope output that differ from mergekit's: {diff} of {total} "
            f"({diff / total:.2e}; max |diff| {worst:.3g}; tie order at the threshold)"
        )


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


if __name__ == "__main__":
    main()
