"""A PEFT LoRA adapter as the tuned model: its delta against a re-derivation from the
adapter file, and the merged model against peft's own merge over a matrix of LoRA configs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model_dir
from merge_reference import DENSITY, SCALE, ref_mask, run, state_dict
from safetensors.torch import load_file

from artifacts.errors import ShortcotError


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


# ------------------------------------------------------------ against peft, config matrix

# Tiny Llamas trained by nobody: every trainable adapter tensor gets seeded noise, so that
# B != 0 and modules_to_save copies differ from the base.
LINEAR = ["q_proj", "v_proj", "down_proj"]
MATRIX = {
    # name: (LoraConfig settings, base: "tied" or "untied")
    "r4_alpha8": (dict(r=4, lora_alpha=8, target_modules=LINEAR), "tied"),
    "r16_alpha4": (dict(r=16, lora_alpha=4, target_modules=["k_proj", "up_proj"]), "tied"),
    "rslora_r8": (dict(r=8, lora_alpha=16, use_rslora=True, target_modules=LINEAR), "tied"),
    "rslora_r6": (dict(r=6, lora_alpha=7, use_rslora=True, target_modules=["o_proj"]), "tied"),
    "rank_alpha_patterns": (
        dict(
            r=4,
            lora_alpha=8,
            target_modules=[*LINEAR, "up_proj"],
            rank_pattern={"q_proj": 2, "layers.1.mlp.down_proj": 6},
            alpha_pattern={"v_proj": 3, r"layers\.0\.mlp\.up_proj": 5},
        ),
        "tied",
    ),
    "rslora_patterns_all_linear": (
        dict(
            r=4,
            lora_alpha=8,
            use_rslora=True,
            target_modules="all-linear",
            rank_pattern={"k_proj": 3},
            alpha_pattern={"gate_proj": 11},
        ),
        "tied",
    ),
    "layers_to_transform": (
        dict(r=4, lora_alpha=8, target_modules=LINEAR, layers_to_transform=[1]),
        "tied",
    ),
    "modules_to_save": (
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj"],
            modules_to_save=["norm", "input_layernorm"],
        ),
        "tied",
    ),
    "embedding_untied": (
        dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]),
        "untied",
    ),
    "lm_head_untied": (dict(r=4, lora_alpha=8, target_modules=["lm_head", "q_proj"]), "untied"),
    "modules_to_save_lm_head_untied": (
        dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]),
        "untied",
    ),
    # A base whose output embedding is its input embedding (stored once). An adapter that
    # changes one of them trains them apart: the other keeps the base's value. The merge
    # writes them untied; peft's merge_and_unload adds the change to the shared weight,
    # which is not the adapted model for the cases in PEFT_MERGE_IS_NOT_THE_ADAPTER.
    "embedding_tied": (dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]), "tied"),
    "embedding_rslora_patterns_tied": (
        dict(
            r=4,
            lora_alpha=8,
            use_rslora=True,
            target_modules=["embed_tokens", "v_proj"],
            rank_pattern={"embed_tokens": 2},
            alpha_pattern={"embed_tokens": 6},
        ),
        "tied",
    ),
    "lm_head_tied": (dict(r=4, lora_alpha=8, target_modules=["lm_head", "q_proj"]), "tied"),
    "embedding_tied_ensure_weight_tying": (
        dict(r=4, lora_alpha=8, target_modules=["embed_tokens"], ensure_weight_tying=True),
        "tied",
    ),
    "lm_head_tied_ensure_weight_tying": (
        dict(r=4, lora_alpha=8, target_modules=["lm_head"], ensure_weight_tying=True),
        "tied",
    ),
    "modules_to_save_embedding_tied": (
        dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["embed_tokens"]),
        "tied",
    ),
    "modules_to_save_lm_head_tied": (
        dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]),
        "tied",
    ),
}
PEFT_MERGE_IS_NOT_THE_ADAPTER = {
    "embedding_tied",
    "embedding_rslora_patterns_tied",
    "lm_head_tied",
    "embedding_tied_ensure_weight_tying",  # both adapters land in the shared weight: 2 deltas
    "lm_head_tied_ensure_weight_tying",
}
# Adapters the merge refuses with a one-line error (their delta is not scaling * B @ A).
UNSUPPORTED = {
    "dora": (dict(use_dora=True), "DoRA"),
    "lora_bias": (dict(lora_bias=True), "LoRA biases"),
    "trainable_tokens": (dict(trainable_token_indices=[1, 5]), "trainable_token_indices"),
}
IDS = torch.tensor([[1, 5, 7, 9, 20, 100, 3, 250]])


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("lora_bases")
    make_tiny_model_dir(root / "tied", tiny_tokenizer, seed=6)
    make_tiny_model_dir(root / "untied", tiny_tokenizer, seed=6, tie_word_embeddings=False)
    return root


def train_adapter(base, settings: dict, folder, model_class=None):
    """A peft adapter on ``base`` with seeded noise on every trainable tensor, saved."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = (model_class or AutoModelForCausalLM).from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(**settings))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    peft_model.save_pretrained(folder)
    return folder


def adapted(base, adapter, model_class=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = (model_class or AutoModelForCausalLM).from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter)


def adapted_weights(peft_model, base_sd: dict) -> dict:
    """The adapted model's weights by peft's own per-layer delta (``get_delta_weight``) and
    saved modules, each on its own layer, which is merge_and_unload but for shared weights."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    out = dict(base_sd)
    for name, module in peft_model.named_modules():
        key = name.removeprefix("base_model.model.") + ".weight"
        if isinstance(module, LoraLayer) and "default" in {
            *module.lora_A.keys(),
            *module.lora_embedding_A.keys(),
        }:
            out[key] = module.get_base_layer().weight + module.get_delta_weight("default")
        elif isinstance(module, ModulesToSaveWrapper):
            out[key] = module.modules_to_save["default"].weight
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("case", list(MATRIX))
def test_lora_merge_equals_peft(case, bases, tmp_path):
    """At density 1 and scale 1 the merge is the adapted model: every tensor equals peft's
    own merge_and_unload bit for bit (where that is the adapted model), or else the
    weights of peft's per-layer deltas; and its logits are the adapter's."""
    from transformers import AutoModelForCausalLM

    settings, which = MATRIX[case]
    base = bases / which
    adapter = train_adapter(base, settings, tmp_path / "adapter")
    out = run(base=str(base), tuned=str(adapter), out=str(tmp_path / "m"), density=1.0, scale=1.0)
    got, base_sd = state_dict(out), state_dict(base)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] == ("lm_head.weight" not in got)
    if which == "tied" and "lm_head.weight" not in base_sd:
        base_sd["lm_head.weight"] = base_sd["model.embed_tokens.weight"]
    model = adapted(base, adapter)
    want = adapted_weights(model, base_sd)
    changed = [n for n in got if not torch.equal(got[n], base_sd[n])]
    assert changed and all(torch.equal(got[n], want[n]) for n in got), case
    with torch.no_grad():
        logits = model(IDS).logits
        ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(IDS).logits
        merged = model.merge_and_unload()
        peft_logits = merged(IDS).logits
    torch.testing.assert_close(ours, logits, rtol=0, atol=1e-5)
    ref = {k: v.detach() for k, v in merged.state_dict().items()}
    if case in PEFT_MERGE_IS_NOT_THE_ADAPTER:
        assert (peft_logits - logits).abs().max() > 1e-2
    else:
        assert all(torch.equal(got[n], ref[n]) for n in got), case
        torch.testing.assert_close(peft_logits, logits, rtol=0, atol=1e-5)


def test_lora_fan_in_fan_out_conv1d_equals_peft(tmp_path):
    """GPT-2 stores its Conv1D weights transposed (fan_in_fan_out), so is the delta."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "base")
    settings = dict(
        r=4, lora_alpha=8, use_rslora=True, target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
    )  # fmt: skip
    adapter = train_adapter(tmp_path / "base", settings, tmp_path / "adapter", GPT2LMHeadModel)
    out = run(
        base=str(tmp_path / "base"),
        tuned=str(adapter),
        out=str(tmp_path / "m"),
        density=1.0,
        scale=1.0,
    )
    ref = adapted(tmp_path / "base", adapter, GPT2LMHeadModel).merge_and_unload().state_dict()
    got, base_sd = state_dict(out), state_dict(tmp_path / "base")
    # c_attn (32 x 96, not square: a missing transpose would not fit), attn and mlp c_proj
    assert sum(not torch.equal(got[n], base_sd[n]) for n in got) == 3 * 2
    assert all(torch.equal(got[n], ref[n]) for n in got)


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_lora_is_a_clear_error(case, bases, tmp_path):
    """Adapters whose tuned weight is not W + scaling * B @ A are refused in one line that
    says what to do (merge with peft first), before anything is written."""
    extra, message = UNSUPPORTED[case]
    settings = dict(r=4, lora_alpha=8, target_modules=["q_proj"], **extra)
    adapter = train_adapter(bases / "tied", settings, tmp_path / "adapter")
    with pytest.raises(ShortcotError, match=message) as err:
        run(base=str(bases / "tied"), tuned=str(adapter), out=str(tmp_path / "m"))
    assert "merge" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "m").exists()
