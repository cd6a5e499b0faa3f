"""End-to-end tests of the magnitude-selective merge on tiny Llama checkpoints: the weights.

Every merged tensor is compared entry by entry with an independent computation in plain
torch on the full state dicts (stable descending sort of |delta| keeps the first k,
`merge_reference.reference_merge`), and the per-tensor scope with mergekit's own ``ties``
method. Output files, record and card: test_merge_output.py; the CLI: test_merge_cli.py;
LoRA adapters: test_merge_lora.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model_dir
from merge_reference import (
    DENSITY,
    SCALE,
    assert_same,
    build_bf16_pair,
    build_pair,
    file_order,
    make_tuned,
    reference_merge,
    run,
    state_dict,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    return build_pair(tmp_path_factory.mktemp("merge_pair"), tiny_tokenizer)


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory, tiny_tokenizer):
    return build_bf16_pair(tmp_path_factory.mktemp("merge_bf16"), tiny_tokenizer)


# -------------------------------------------------------------------------- the merge


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_merge_equals_independent_computation(pair, tmp_path, scope):
    out = run(
        base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"), scope=scope
    )
    base, tuned = state_dict(pair / "base"), state_dict(pair / "tuned")
    base["lm_head.weight"] = base["model.embed_tokens.weight"]  # tied in both; not stored
    want = reference_merge(base, tuned, scope=scope, order=file_order(pair / "tuned"))
    assert_same(state_dict(out), want)
    # The selection kept exactly k entries (global) / k per tensor (tensor).
    record = json.loads((out / "merge_record.json").read_text())
    total = sum(t.numel() for t in tuned.values())
    if scope == "global":
        assert record["totals"]["kept"] == int(DENSITY * total)
        assert record["threshold"]["ties_kept"] >= 1
    else:
        for t in record["tensors"]:
            assert t["kept"] == max(1, int(DENSITY * t["numel"])), t["name"]
    norms = {t["name"]: t["delta_norm"] for t in record["tensors"]}
    name = "model.layers.0.mlp.up_proj.weight"
    assert norms[name] == pytest.approx(float((tuned[name] - base[name]).norm()), rel=1e-5)


@pytest.mark.parametrize("scope", ["tensor", "global"])
@pytest.mark.parametrize("path", ["pending", "refine"])
def test_bf16_ties_and_chunked_tensors(bf16_pair, tmp_path, scope, path, monkeypatch):
    # Small chunks so every tensor is processed in several chunks (the large-tensor path);
    # "refine": no threshold-bucket entries set aside, the extra low-histogram pass instead.
    monkeypatch.setattr("merge.select.CHUNK", 1000)
    if path == "refine":
        monkeypatch.setattr("merge.select.PENDING_LIMIT", 0)
    out = run(
        base=str(bf16_pair / "base"),
        tuned=str(bf16_pair / "tuned"),
        out=str(tmp_path / "m"),
        scope=scope,
    )
    base, tuned = state_dict(bf16_pair / "base"), state_dict(bf16_pair / "tuned")
    base["lm_head.weight"] = base["model.embed_tokens.weight"]
    assert tuned["model.embed_tokens.weight"].dtype == torch.bfloat16
    want = reference_merge(base, tuned, scope=scope, order=file_order(bf16_pair / "tuned"))
    got = state_dict(out)
    assert_same(got, want)
    assert got["model.norm.weight"].dtype == torch.float32
    assert got["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_output_does_not_depend_on_threads(bf16_pair, tmp_path, scope, monkeypatch):
    """Every chunk split across 1 or 3 threads (and tensors read chunk by chunk): the same
    bytes, kept counts and delta norms."""
    monkeypatch.setattr("merge.select.CHUNK", 1000)
    monkeypatch.setattr("merge.slices.MIN_SLICE", 64)
    records = []
    for threads in (1, 3):
        out = run(
            base=str(bf16_pair / "base"),
            tuned=str(bf16_pair / "tuned"),
            out=str(tmp_path / f"t{threads}"),
            scope=scope,
            exclude=["norm"],
            shard_size="30KB",
            threads=threads,
        )
        record = json.loads((out / "merge_record.json").read_text())
        files = {f.name: f.read_bytes() for f in sorted(out.glob("*.safetensors"))}
        records.append((files, record["tensors"], record.get("threshold")))
    assert len(records[0][0]) > 1 and records[0] == records[1]


def test_excludes_and_dtype(pair, tmp_path):
    ex = ["embed_tokens", r"norm\.weight$"]
    out = run(
        base=str(pair / "base"),
        tuned=str(pair / "tuned"),
        out=str(tmp_path / "m"),
        exclude=ex,
        scope="global",
    )
    base, tuned = state_dict(pair / "base"), state_dict(pair / "tuned")
    want = reference_merge(
        base, tuned, scope="global", order=file_order(pair / "tuned"), exclude=ex
    )
    got = state_dict(out)
    assert_same(got, want)
    assert torch.equal(got["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    # --exclude-takes tuned and --dtype bfloat16
    out2 = run(
        base=str(pair / "base"),
        tuned=str(pair / "tuned"),
        out=str(tmp_path / "m2"),
        exclude=ex,
        exclude_takes="tuned",
        dtype="bfloat16",
    )
    got2 = state_dict(out2)
    assert torch.equal(got2["model.norm.weight"], tuned["model.norm.weight"].bfloat16())
    want2 = reference_merge(base, tuned, exclude=ex)
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(got2[name], want2[name].bfloat16())
    assert json.loads((out2 / "config.json").read_text())["dtype"] == "bfloat16"


def test_tied_in_base_untied_in_tuned(tmp_path, tiny_tokenizer):
    make_tiny_model_dir(tmp_path / "base", tiny_tokenizer, seed=5)
    make_tuned(tmp_path / "base", tmp_path / "tuned", untie=True)
    base, tuned = state_dict(tmp_path / "base"), state_dict(tmp_path / "tuned")
    assert "lm_head.weight" not in base and "lm_head.weight" in tuned
    out = run(base=str(tmp_path / "base"), tuned=str(tmp_path / "tuned"), out=str(tmp_path / "m"))
    base["lm_head.weight"] = base["model.embed_tokens.weight"]
    assert_same(state_dict(out), reference_merge(base, tuned))
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    # The other way round: base stores lm_head, tuned ties it -> the output is tied.
    out2 = run(base=str(tmp_path / "tuned"), tuned=str(tmp_path / "base"), out=str(tmp_path / "m2"))
    got2 = state_dict(out2)
    assert "lm_head.weight" not in got2
    base_sd = state_dict(tmp_path / "base")
    assert_same(got2, reference_merge({k: tuned[k] for k in base_sd}, base_sd))


# ------------------------------------------------------------------------ mergekit


def _mergekit_run(cfg: dict, out: Path) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(cfg), str(out), options=MergeOptions(quiet=True))
    return state_dict(out)


def test_tensor_scope_equals_mergekit_ties(pair, tmp_path):
    # Gaussian float32 noise: no ties, so mergekit's argsort order does not matter.
    ties = {
        "merge_method": "ties",
        "base_model": str(pair / "base"),
        "models": [
            {"model": str(pair / "tuned"), "parameters": {"density": DENSITY, "weight": 1.0}}
        ],
        "parameters": {"normalize": False, "rescale": False, "lambda": SCALE},
        "dtype": "float32",
    }
    theirs = _mergekit_run(ties, tmp_path / "mk")
    ours = state_dict(
        run(base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"))
    )
    assert set(ours) == set(theirs)
    for n in theirs:
        assert torch.equal(ours[n], theirs[n]), n


def test_registered_mergekit_method_by_name(pair, tmp_path):
    import yaml
    from mergekit.merge_methods import registry

    import merge.mergekit_method  # noqa: F401  (registers magnitude_selective)

    assert registry.get("magnitude_selective").spec.name == "magnitude_selective"
    recipe = {
        "merge_method": "magnitude_selective",
        "base_model": str(pair / "base"),
        "models": [{"model": str(pair / "tuned")}],
        "parameters": {"density": 0.4, "scale": 0.5},
        "dtype": "float32",
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    # The documented CLI: mergekit-yaml with the method registered.
    with pytest.raises(SystemExit) as exc:
        merge.mergekit_method.main([str(tmp_path / "recipe.yaml"), str(tmp_path / "mk"), "--quiet"])
    assert exc.value.code in (0, None)
    theirs = state_dict(tmp_path / "mk")
    base, tuned = state_dict(pair / "base"), state_dict(pair / "tuned")
    base["lm_head.weight"] = base["model.embed_tokens.weight"]
    assert_same(theirs, reference_merge(base, tuned, density=0.4, scale=0.5))


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_streaming_holds_few_tensors(pair, tmp_path, monkeypatch, scope):
    """At most a few input pairs are alive at once, whatever the number of tensors, and
    the output tensors are computed into a few buffers that the writer hands back."""
    import weakref

    import merge.stream as ms
    from merge.writer import ShardedWriter

    refs: list = []
    peak = [0]
    original = ms.load_pair

    def tracking(plan, job, *args):
        result = original(plan, job, *args)
        refs.append(weakref.ref(result))
        peak[0] = max(peak[0], sum(r() is not None for r in refs))
        return result

    writers = []

    class Recording(ShardedWriter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            writers.append(self)

    monkeypatch.setattr(ms, "load_pair", tracking)
    monkeypatch.setattr("merge.selective.ShardedWriter", Recording)
    out = run(
        base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"), scope=scope
    )
    n_tensors = len(json.loads((out / "merge_record.json").read_text())["tensors"])
    assert n_tensors >= 20 and peak[0] <= 3, (peak[0], n_tensors)
    assert 1 <= len(writers[0]._lent) <= 4  # queue depth 2, one being written, one filled
