"""What a merge writes besides the weights: merge_record.json, a folder transformers
loads, the model card, the upload, and replacing an existing output."""

from __future__ import annotations

import json
import shutil
from unittest import mock

import pytest
import torch
from merge_reference import (
    DENSITY,
    SCALE,
    build_pair,
    reference_merge,
    run,
    state_dict,
)

from artifacts.cli import HubArguments
from merge.config import MergeConfig
from merge.selective import merge_models


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    return build_pair(tmp_path_factory.mktemp("merge_pair"), tiny_tokenizer)


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


def test_push_to_hub_with_mocked_api(pair, tmp_path):
    api = mock.MagicMock()
    api.create_repo.return_value = "https://huggingface.co/me/merged"
    cfg = MergeConfig(base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"))
    hub = HubArguments(push_to_hub=True, hub_model_id="me/merged", hub_private_repo=True)
    out = merge_models(cfg, hub, hf_api=api)
    api.create_repo.assert_called_once()
    assert api.create_repo.call_args.kwargs["private"] is True
    assert api.upload_folder.call_args.kwargs["folder_path"] == str(out)
    assert api.upload_folder.call_args.kwargs["repo_id"] == "me/merged"


def test_force_replaces_existing_output(pair, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "stale.txt").write_text("old")
    out = run(
        base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"), force=True
    )
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
