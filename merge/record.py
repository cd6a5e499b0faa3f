"""What a merge writes about itself: ``merge_record.json`` (settings, inputs with their
revisions and file hashes, the threshold, per-tensor figures), the model card, and the
equivalent mergekit recipe shown in it."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from artifacts.cards import hub_id, public_ref, write_model_card
from artifacts.hub import revision_of
from merge import select
from merge.config import MergeConfig
from merge.engine import TensorStats
from merge.plan import MergePlan

METHOD = "magnitude_selective"


def _file_facts(folder: Path, files: list[Path], full_hash: bool) -> list[dict]:
    facts = []
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header_sha = hashlib.sha256(fh.read(n)).hexdigest()
        item = {"file": f.name, "bytes": f.stat().st_size, "header_sha256": header_sha}
        if full_hash:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    h.update(chunk)
            item["sha256"] = h.hexdigest()
        facts.append(item)
    return facts


def _input_record(
    ref: str, folder: Path, revision: str | None, files: list[Path], full_hash: bool
) -> dict:
    return {
        "ref": ref,
        "revision": revision_of(folder) or revision,
        "local": Path(ref).expanduser().exists(),
        "files": _file_facts(folder, files, full_hash),
    }


def parameters(cfg: MergeConfig) -> dict:
    return {
        "method": METHOD,
        "density": cfg.density,
        "scale": cfg.scale,
        "scope": cfg.scope,
        "exclude": list(cfg.exclude),
        "exclude_takes": cfg.exclude_takes,
        "dtype": cfg.dtype,
        "tokenizer_from": cfg.tokenizer_from,
    }


def mergekit_yaml(cfg: MergeConfig) -> str:
    """The mergekit recipe of the same merge (exact for ``--scope tensor`` without excludes)."""
    return (
        f"merge_method: {METHOD}\nbase_model: {cfg.base}\nmodels:\n  - model: {cfg.tuned}\n"
        f"parameters:\n  density: {cfg.density}\n  scale: {cfg.scale}\ndtype: float32\n"
        f"# same weights with mergekit's built-in ties: merge_method: ties, weight: 1.0, "
        f"lambda: {cfg.scale}, normalize: false, rescale: false\n"
    )


def write_card(plan: MergePlan, folder: Path, record: dict) -> None:
    cfg = plan.cfg
    # The model tree: the base, and the tuned model when it is a model of its own on the Hub
    # (a LoRA adapter is a delta on the base, not a parent).
    parents = [hub_id(cfg.base), hub_id(cfg.tuned) if plan.tuned.kind != "lora" else None]
    shown = dataclasses.replace(cfg, base=public_ref(cfg.base), tuned=public_ref(cfg.tuned))
    tot = record["totals"]
    summary = (
        f"Magnitude-selective merge (DLER, arXiv 2510.15110, section 4.6) of `{shown.tuned}` into "
        f"`{shown.base}`: `merged = base + {cfg.scale} * (delta * mask)`, keeping the "
        f"{cfg.density:.0%} largest |tuned - base| entries ({cfg.scope} scope). "
        f"{tot['kept']:,} of {tot['merged_numel']:,} merged entries kept "
        f"({tot['kept_fraction']:.4f}). Per-tensor figures are in `merge_record.json`.\n\n"
        f"Equivalent mergekit recipe (with `import merge.mergekit_method`):\n\n```yaml\n{mergekit_yaml(shown)}```"
    )
    write_model_card(
        folder,
        title=f"{Path(shown.tuned).name} merged into {Path(shown.base).name}",
        summary=summary,
        recipe=record["parameters"],
        base_model=[p for p in parents if p] or None,
        base_model_relation="merge",
        tags=["merge", "magnitude-selective-merge", "dler"],
    )


def merge_record(
    plan: MergePlan,
    stats: dict[str, TensorStats],
    threshold: select.Threshold | None,
    seconds: float,
) -> dict:
    """The content of ``merge_record.json`` for a finished merge."""
    cfg = plan.cfg
    kept = sum(s.kept for s in stats.values() if s.action == "merge")
    return {
        "method": METHOD,
        "reference": "DLER, arXiv 2510.15110, section 4.6",
        "parameters": parameters(cfg),
        "inputs": {
            "base": _input_record(
                cfg.base, plan.base_folder, cfg.base_revision, plan.base.files, cfg.hash_inputs
            ),
            "tuned": _input_record(
                cfg.tuned,
                plan.tuned_folder,
                cfg.tuned_revision,
                [plan.tuned_folder / "adapter_model.safetensors"]
                if plan.tuned.kind == "lora"
                else plan.tuned.ckpt.files,
                cfg.hash_inputs,
            ),
            "tuned_kind": plan.tuned.kind,
        },
        "threshold": None
        if threshold is None
        else {"magnitude": threshold.value, "ties_kept": threshold.ties},
        "totals": {
            "merged_numel": plan.merged_numel,
            "kept": kept,
            "kept_fraction": kept / plan.merged_numel,
            "tensors": len(plan.jobs),
            "seconds": round(seconds, 3),
        },
        "dropped_tied": plan.dropped,
        "tensors": [stats[j.name].as_record() for j in plan.jobs],
    }
