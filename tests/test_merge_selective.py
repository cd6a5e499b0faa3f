"""End-to-end tests of `python -m merge.selective` on tiny Llama checkpoints.

Every merged tensor is compared entry by entry with an independent computation in plain
torch on the full state dicts (stable descending sort of |delta| keeps the first k), and
the per-tensor scope with mergekit's own ``ties`` method.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import make_tiny_model_dir
from safetensors.torch import load_file, save_file

from artifacts.errors import run_cli
from merge.selective import MergeConfig, main, merge_models

DENSITY, SCALE = 0.25, 0.7


# ------------------------------------------------------------------------------ helpers


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
    import re

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


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    """Base (tied, float32) and tuned = base + gaussian noise (sharded)."""
    root = tmp_path_factory.mktemp("merge_pair")
    make_tiny_model_dir(root / "base", tiny_tokenizer, seed=0)
    make_tuned(root / "base", root / "tuned", max_shard_size="60KB")
    assert len(list((root / "tuned").glob("*.safetensors"))) > 1
    return root


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory, tiny_tokenizer):
    """bf16 base (sharded) and bf16 tuned with coarse noise: lots of ties at every threshold."""
    root = tmp_path_factory.mktemp("merge_bf16")
    make_tiny_model_dir(root / "f32", tiny_tokenizer, seed=3)
    make_tuned(root / "f32", root / "base", noise=0.0, dtype=torch.bfloat16, max_shard_size="30KB")
    make_tuned(
        root / "base", root / "tuned", seed=4, noise=0.004, dtype=torch.bfloat16, coarse=True
    )
    for which in ("base", "tuned"):  # mixed dtypes: norms in float32, the rest in bf16
        _edit_tensors(
            root / which, lambda sd: {k: (v.float() if "norm" in k else v) for k, v in sd.items()}
        )
    return root


def run(**kw) -> Path:
    return merge_models(MergeConfig(**kw))


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


def test_record_and_input_hashes(pair, tmp_path):
    import hashlib

    out = run(
        base=str(pair / "base"),
        tuned=str(pair / "tuned"),
        out=str(tmp_path / "m"),
        hash_inputs=True,
    )
    record = json.loads((out / "merge_record.json").read_text())
    assert record["parameters"] == {
        "method": "magnitude_selective",
        "density": DENSITY,
        "scale": SCALE,
        "scope": "tensor",
        "exclude": [],
        "exclude_takes": "base",
        "dtype": None,
        "tokenizer_from": "tuned",
    }
    files = record["inputs"]["tuned"]["files"]
    assert len(files) == len(list((pair / "tuned").glob("*.safetensors")))
    for item in files:
        data = (pair / "tuned" / item["file"]).read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest() and item["bytes"] == len(data)
    by_name = {t["name"]: t for t in record["tensors"]}
    t = by_name["model.layers.0.self_attn.q_proj.weight"]
    assert t["kept_fraction"] == pytest.approx(0.25) and t["numel"] == 32 * 32


def test_output_folder_loads_with_transformers(pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run(
        base=str(pair / "base"),
        tuned=str(pair / "tuned"),
        out=str(tmp_path / "m"),
        shard_size="50KB",
    )
    assert (out / "model.safetensors.index.json").exists()
    for f in (
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "README.md",
        "merge_record.json",
    ):
        assert (out / f).exists(), f
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    got = {k: v for k, v in model.state_dict().items()}
    base, tuned = state_dict(pair / "base"), state_dict(pair / "tuned")
    want = reference_merge(base, tuned)
    for n, v in want.items():
        assert torch.equal(got[n], v), n
    assert AutoTokenizer.from_pretrained(out).chat_template
    card = (out / "README.md").read_text()
    assert card.startswith("---") and "merge" in card and "density" in card


def test_card_links_a_hub_base_and_names_no_local_path(pair, tmp_path, monkeypatch):
    """A base given as a Hub id (served offline from a Hub cache) is the card's base_model
    (relation: merge); the tuned model, a local folder, is named without its absolute path."""
    import huggingface_hub.constants as hub_constants
    from huggingface_hub import ModelCard
    from test_artifacts import hub_cache_snapshot

    snap = hub_cache_snapshot(tmp_path / "hub", "org/tiny-base")
    for f in (pair / "base").iterdir():
        shutil.copy(f, snap / f.name)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    out = run(base="org/tiny-base", tuned=str(pair / "tuned"), out=str(tmp_path / "m"))
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["org/tiny-base"]
    assert card.data.base_model_relation == "merge"
    assert str(pair) not in text and str(tmp_path) not in text and "/tmp/" not in text
    assert "of `tuned` into `org/tiny-base`" in text
    assert "base_model: org/tiny-base" in text and "  - model: tuned" in text  # mergekit recipe


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


def test_lora_adapter_as_tuned(tmp_path, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    make_tiny_model_dir(tmp_path / "base", tiny_tokenizer, seed=6)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        modules_to_save=["norm"],
    )
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    peft_model.save_pretrained(tmp_path / "lora")
    out = run(
        base=str(tmp_path / "base"),
        tuned=str(tmp_path / "lora"),
        out=str(tmp_path / "m"),
        scope="tensor",
    )

    # Independent: delta = (alpha / r) * B @ A from the adapter file; modules_to_save is a full value.
    base = state_dict(tmp_path / "base")
    adapter = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    tuned = {k: v.clone() for k, v in base.items()}
    deltas = {}
    for key, a in adapter.items():
        if ".lora_A." in key:
            module = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            b = adapter[key.replace(".lora_A.", ".lora_B.")]
            deltas[module + ".weight"] = (b @ a) * (8 / 4)
        elif "lora_" not in key:
            tuned[key.removeprefix("base_model.model.")] = a
    assert len(deltas) == 6 and "model.norm.weight" in tuned
    got = state_dict(out)
    for n in base:
        d = deltas.get(n, tuned[n] - base[n])
        k = max(1, int(DENSITY * d.numel()))
        want = base[n] + (d * ref_mask(d.reshape(-1), k).reshape(d.shape)) * SCALE
        torch.testing.assert_close(got[n], want, rtol=1e-6, atol=1e-7, msg=n)
    assert not torch.equal(got["model.norm.weight"], base["model.norm.weight"])
    # Check the selection ran on the LoRA delta itself: kept entries differ from base.
    n = "model.layers.0.mlp.down_proj.weight"
    changed = (got[n] != base[n]).sum()
    assert changed == max(1, int(DENSITY * base[n].numel()))
    record = json.loads((out / "merge_record.json").read_text())
    assert record["inputs"]["tuned_kind"] == "lora"


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


# ------------------------------------------------------------------- CLI behaviour


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def no_leftovers(folder: Path, name: str) -> bool:
    return not (folder / name).exists() and not list(folder.glob(f".{name}.tmp-*"))


def test_dry_run_touches_nothing(pair, tmp_path, capsys):
    code, out, _ = cli(
        [
            "--base",
            str(pair / "base"),
            "--tuned",
            str(pair / "tuned"),
            "--out",
            str(tmp_path / "m"),
            "--dry-run",
            "--push-to-hub",
            "me/merged",
            "--exclude",
            "norm",
        ],
        capsys,
    )
    assert code == 0
    assert (
        "would write" in out
        and "model.safetensors" in out
        and "me/merged" in out
        and "excluded" in out
    )
    assert list(tmp_path.iterdir()) == []


def test_push_to_hub_with_mocked_api(pair, tmp_path):
    api = mock.MagicMock()
    api.create_repo.return_value = "https://huggingface.co/me/merged"
    cfg = MergeConfig(
        base=str(pair / "base"),
        tuned=str(pair / "tuned"),
        out=str(tmp_path / "m"),
        push_to_hub="me/merged",
        private=True,
    )
    out = merge_models(cfg, hf_api=api)
    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.kwargs["private"] is True
    assert api.upload_folder.call_args.kwargs["folder_path"] == str(out)
    assert api.upload_folder.call_args.kwargs["repo_id"] == "me/merged"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture()
def broken(pair, tmp_path):
    """A writable copy of the tuned model to break in different ways."""
    return _copy(pair / "tuned", tmp_path / "broken")


def _edit_tensors(folder: Path, fn) -> None:
    for f in folder.glob("*.safetensors"):
        sd = load_file(f)
        save_file(fn(sd), f, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        names = {n for f in folder.glob("*.safetensors") for n in load_file(f)}
        data["weight_map"] = {k: v for k, v in data["weight_map"].items() if k in names}
        index.write_text(json.dumps(data))


def _first_weight(sd: dict) -> str:
    return next(k for k in sd if k.endswith("proj.weight"))


@pytest.mark.parametrize(
    "case, message",
    [
        ("density0", "density"),
        ("density2", "density"),
        ("exists", "already exists"),
        ("names", "tensor names differ"),
        ("shape", "shape"),
        ("arch", "architectures differ"),
        ("nan", "inf/NaN"),
        ("bin", "convert"),
        ("disk", "not enough disk space"),
        ("regex", "regular expression"),
    ],
)
def test_bad_input_one_line_error_nothing_written(
    pair, broken, tmp_path, capsys, monkeypatch, case, message
):
    args = ["--base", str(pair / "base"), "--tuned", str(broken), "--out", str(tmp_path / "out")]
    if case == "density0":
        args += ["--density", "0"]
    elif case == "density2":
        args += ["--density", "1.5"]
    elif case == "exists":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep.txt").write_text("x")
    elif case == "names":
        _edit_tensors(
            broken, lambda sd: {k: v for k, v in sd.items() if "layers.1.mlp.up_proj" not in k}
        )
    elif case == "shape":
        _edit_tensors(
            broken,
            lambda sd: {k: (v[:-1] if "layers.0.mlp.up_proj" in k else v) for k, v in sd.items()},
        )
    elif case == "arch":
        cfg = json.loads((broken / "config.json").read_text())
        cfg["architectures"] = ["MistralForCausalLM"]
        cfg["model_type"] = "mistral"
        (broken / "config.json").write_text(json.dumps(cfg))
    elif case == "nan":

        def poison(sd):
            sd = dict(sd)
            name = sorted(sd)[-1]
            sd[name] = sd[name].clone()
            sd[name].view(-1)[3] = float("nan")
            return sd

        _edit_tensors(broken, poison)
        args += ["--scope", "tensor"]
    elif case == "bin":
        for f in broken.glob("*.safetensors*"):
            f.unlink()
        torch.save({}, broken / "pytorch_model.bin")
    elif case == "disk":
        import artifacts.outdir

        monkeypatch.setattr(artifacts.outdir.shutil, "disk_usage", lambda p: mock.Mock(free=1000))
    elif case == "regex":
        args += ["--exclude", "(unclosed"]
    code, _, err = cli(args, capsys)
    assert code == 2
    # One error line (the progress bar may precede it on stderr), no traceback.
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == errors[0]
    if case == "exists":
        assert (tmp_path / "out" / "keep.txt").exists()
        assert not list(tmp_path.glob(".out.tmp-*"))
    else:
        assert no_leftovers(tmp_path, "out")


def test_force_replaces_existing_output(pair, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "stale.txt").write_text("old")
    out = run(
        base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"), force=True
    )
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()


@pytest.mark.parametrize("scope", ["tensor", "global"])
def test_streaming_holds_few_tensors(pair, tmp_path, monkeypatch, scope):
    """At most a few input pairs are alive at once, whatever the number of tensors."""
    import weakref

    import merge.selective as ms

    refs: list = []
    peak = [0]
    original = ms.load_pair

    def tracking(plan, job):
        result = original(plan, job)
        refs.append(weakref.ref(result))
        peak[0] = max(peak[0], sum(r() is not None for r in refs))
        return result

    monkeypatch.setattr(ms, "load_pair", tracking)
    out = run(
        base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"), scope=scope
    )
    n_tensors = len(json.loads((out / "merge_record.json").read_text())["tensors"])
    assert n_tensors >= 20 and peak[0] <= 3, (peak[0], n_tensors)
