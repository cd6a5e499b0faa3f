"""Shared by the merge tests: an independent reference merge on full state dicts, tiny
tuned models, and the checkpoint pairs the tests merge (built per test module)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from conftest import make_tiny_model_dir
from safetensors.torch import load_file, save_file

from merge.config import MergeConfig
from merge.selective import merge_models

DENSITY, SCALE = 0.25, 0.7


def state_dict(folder: Path) -> dict[str, torch.Tensor]:
    sd = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def file_order(folder: Path) -> list[str]:
    """Tensor names in checkpoint order (file name, then byte offset): the merge order."""
    names = []
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        names += sorted(header, key=lambda k: header[k]["data_offsets"][0])
    return names


def ref_mask(delta_flat: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(delta_flat, dtype=torch.bool)
    mask[torch.sort(delta_flat.abs(), descending=True, stable=True).indices[:k]] = True
    return mask


def reference_merge(
    base, tuned, density=DENSITY, scale=SCALE, scope="tensor", order=None, exclude=()
):
    """Independent merge on full state dicts (float32 math, output in tuned dtype)."""
    names = order or sorted(tuned)
    merged = [n for n in names if not any(re.search(p, n) for p in exclude)]
    deltas = {n: tuned[n].float() - base[n].float() for n in merged}
    if scope == "global":
        flat = torch.cat([deltas[n].reshape(-1) for n in merged])
        k = max(1, int(density * flat.numel()))
        mask_flat = ref_mask(flat, k)
        masks, pos = {}, 0
        for n in merged:
            masks[n] = mask_flat[pos : pos + deltas[n].numel()].reshape(deltas[n].shape)
            pos += deltas[n].numel()
    else:
        masks = {}
        for n in merged:
            k = max(1, int(density * deltas[n].numel()))
            masks[n] = ref_mask(deltas[n].reshape(-1), k).reshape(deltas[n].shape)
    out = {}
    for n in names:
        if n in deltas:
            out[n] = (base[n].float() + (deltas[n] * masks[n]) * scale).to(tuned[n].dtype)
        else:
            out[n] = base[n].to(tuned[n].dtype)
    return out


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for n in want:
        assert got[n].dtype == want[n].dtype, n
        assert torch.equal(got[n], want[n]), (
            f"{n}: max diff {(got[n].float() - want[n].float()).abs().max()}"
        )


def make_tuned(
    base_dir: Path,
    out: Path,
    seed=1,
    noise=0.01,
    dtype=None,
    max_shard_size="5GB",
    untie=False,
    coarse=False,
):
    """tuned = base + noise, saved as a normal HF folder (optionally bf16, sharded, untied)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if untie:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            n = torch.randn(p.shape, generator=g) * noise
            if coarse:  # few distinct values: many ties in |delta|
                n = torch.round(n / noise) * noise
            p.add_(n)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def build_pair(root: Path, tokenizer) -> Path:
    """Base (tied, float32) and tuned = base + gaussian noise (sharded)."""
    make_tiny_model_dir(root / "base", tokenizer, seed=0)
    make_tuned(root / "base", root / "tuned", max_shard_size="60KB")
    assert len(list((root / "tuned").glob("*.safetensors"))) > 1
    return root


def build_bf16_pair(root: Path, tokenizer) -> Path:
    """bf16 base (sharded) and bf16 tuned with coarse noise: lots of ties at every threshold."""
    make_tiny_model_dir(root / "f32", tokenizer, seed=3)
    make_tuned(root / "f32", root / "base", noise=0.0, dtype=torch.bfloat16, max_shard_size="30KB")
    make_tuned(
        root / "base", root / "tuned", seed=4, noise=0.004, dtype=torch.bfloat16, coarse=True
    )
    for which in ("base", "tuned"):  # mixed dtypes: norms in float32, the rest in bf16
        edit_tensors(
            root / which, lambda sd: {k: (v.float() if "norm" in k else v) for k, v in sd.items()}
        )
    return root


def run(**kw) -> Path:
    return merge_models(MergeConfig(**kw))


def edit_tensors(folder: Path, fn) -> None:
    for f in folder.glob("*.safetensors"):
        sd = load_file(f)
        save_file(fn(sd), f, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        names = {n for f in folder.glob("*.safetensors") for n in load_file(f)}
        data["weight_map"] = {k: v for k, v in data["weight_map"].items() if k in names}
        index.write_text(json.dumps(data))
