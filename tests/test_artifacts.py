"""The shared plumbing: typed configs, atomic outputs, resumable JSONL, cards, Hub upload."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal
from unittest import mock

import pytest

from artifacts.cards import hub_id, public_ref, write_dataset_card, write_model_card
from artifacts.cli import YamlMapping, arg, make_parser, parse_args
from artifacts.errors import ShortcotError
from artifacts.hub import push_folder, resolve_local
from artifacts.jsonl import JsonlAppender, read_jsonl
from artifacts.outdir import atomic_output_dir, check_free_space


@dataclasses.dataclass
class Cfg:
    lr: float = arg(1e-6, "learning rate")
    steps: int = arg(10, "optimizer steps")
    use_lora: bool = arg(False, "train a LoRA adapter")
    mode: Literal["dler", "grpo"] = arg("dler", "advantage")
    target: int | None = arg(None, "L_T")
    names: list[str] = arg(["q_proj"], "modules")
    extra: YamlMapping = arg({}, "settings for a stage")


def _parse(argv):
    (cfg,) = parse_args([Cfg], argv, prog="x")
    return cfg


def test_recipe_then_flags_last_wins(tmp_path):
    """TRL's convention: a recipe's keys are the flags' names, flags given after it win."""
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-5\nsteps: 20\nnames: [a, b]\nextra: {max_steps: 3}\n")
    cfg = _parse(["--config", str(path), "--steps", "30", "--use_lora", "--target", "48"])
    assert cfg.lr == 1e-5 and cfg.steps == 30 and cfg.use_lora is True and cfg.target == 48
    assert cfg.names == ["a", "b"] and cfg.extra == {"max_steps": 3}
    cfg = _parse(
        ["--use-lora", "false", "--names", "x", "y", "--extra", "{a: 1}", "--mode", "grpo"]
    )
    assert cfg.use_lora is False and cfg.names == ["x", "y"] and cfg.extra == {"a": 1}
    assert cfg.mode == "grpo" and _parse([]).names == ["q_proj"]  # a fresh default each time
    path.write_text("lr: 1e-5\n")  # PyYAML reads this as a string; the flag's type converts it
    assert _parse(["--config", str(path)]).lr == 1e-5


def test_bad_settings_are_one_line_errors_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    cases = [
        (["--lrr", "1"], "unrecognized argument.*--lrr"),
        (["--ste", "1"], "unrecognized argument"),  # no abbreviations
        (["--steps", "abc"], "--steps: invalid int value: 'abc'"),
        (["--mode", "ppo"], "invalid choice: 'ppo'"),
        (["--extra", "[1, 2]"], "not a mapping"),
        (["--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--config"], "--config needs a YAML file"),
    ]
    for argv, match in cases:
        with pytest.raises(ShortcotError, match=match):
            _parse(argv)
    path.write_text("stpes: 3\n")
    with pytest.raises(ShortcotError, match=r"unknown key\(s\) stpes \(did you mean steps\?\)"):
        _parse(["--config", str(path)])
    path.write_text("steps: [unclosed\n")
    with pytest.raises(ShortcotError, match="not valid YAML"):
        _parse(["--config", str(path)])


def test_every_flag_has_help_and_shows_its_default():
    text = make_parser([Cfg], prog="x").format_help()
    for name in ("--lr", "--steps", "--use_lora", "--mode", "--target", "--names", "--extra"):
        assert name in text
    assert "learning rate (default: 1e-06)" in " ".join(text.split())


def test_atomic_output_dir_moves_on_success_and_cleans_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(ShortcotError, match="--force"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert (out / "a.txt").exists() and not (out / "b.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_free_space_check(tmp_path):
    check_free_space(tmp_path / "x" / "y", 1)
    with pytest.raises(ShortcotError, match="not enough disk space"):
        check_free_space(tmp_path, 10**18)


def test_jsonl_resume_skips_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlAppender(path) as w:
        w.write({"i": 0})
        w.write({"i": 1})
    with path.open("a") as f:
        f.write('{"i": 2')  # interrupted mid-write
    assert [r["i"] for r in read_jsonl(path)] == [0, 1]


def test_cards_have_front_matter(tmp_path):
    write_model_card(
        tmp_path, "M", "merged", {"density": 0.25}, base_model="org/base", tags=["merge"]
    )
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---") and "base_model: org/base" in text and '"density": 0.25' in text
    d = tmp_path / "d"
    d.mkdir()
    write_dataset_card(d, "D", "compressed", {"strategy": "shortest-correct"}, stats_table="| a |")
    assert "compressed-cot" in (d / "README.md").read_text()


def hub_cache_snapshot(cache: Path, repo_id: str, sha: str = "a" * 40) -> Path:
    """An empty snapshot folder laid out as huggingface_hub's cache lays out ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def test_cards_name_inputs_publicly(tmp_path, monkeypatch):
    """Hub ids (and Hub cache snapshots) become base_model with its relation; local folders
    are named by their path inside the working directory or by their name, never by an
    absolute path; no placeholder links."""
    import re

    from huggingface_hub import DatasetCard, ModelCard

    snap = hub_cache_snapshot(tmp_path / "hub", "org/base-model")
    local = tmp_path / "work" / "runs" / "dler"
    local.mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "teacher"
    outside.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert hub_id("org/base-model") == "org/base-model"
    assert hub_id(str(snap)) == "org/base-model" and public_ref(str(snap)) == "org/base-model"
    assert hub_id(str(local)) is None and hub_id("runs/dler") is None
    assert public_ref(str(local)) == "runs/dler" and public_ref("./runs/dler") == "runs/dler"
    assert public_ref(str(outside)) == "teacher"
    assert public_ref("math") == "math"  # not a path: unchanged

    recipe = {"model": str(local), "data": str(outside / "train.jsonl"), "nested": [str(snap)]}
    card_dir = tmp_path / "card"
    card_dir.mkdir()
    write_model_card(
        card_dir,
        f"{local.name} tuned",
        f"Trained from `{local}` on `{outside / 'train.jsonl'}` in {tmp_path / 'work'}/x.",
        recipe,
        base_model=hub_id(str(snap)),
        base_model_relation="finetune",
    )
    text = (card_dir / "README.md").read_text()
    card = ModelCard.load(card_dir / "README.md")
    assert card.data.base_model == "org/base-model"
    assert card.data.base_model_relation == "finetune"
    assert str(tmp_path) not in text
    assert "`runs/dler`" in text and "`train.jsonl`" in text and '"model": "runs/dler"' in text
    assert '"nested": [\n    "org/base-model"' in text
    assert not re.search(r"\]\(https?://[^/)]*/?\)", text)  # no link to a bare site
    # no base model (a local start): no relation either
    write_model_card(card_dir, "t", "s", {}, base_model=None, base_model_relation="finetune")
    assert "base_model" not in (card_dir / "README.md").read_text()

    write_dataset_card(card_dir, "D", "s", {"teacher": str(outside)}, source_models=[str(outside)])
    text = (card_dir / "README.md").read_text()
    assert str(tmp_path) not in text and "Made from: `teacher`" in text
    assert DatasetCard.load(card_dir / "README.md").data.tags[0] == "shortcot"


def test_resolve_local_folder_and_offline_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_local(tmp_path) == tmp_path
    with pytest.raises(ShortcotError, match="does not exist"):
        resolve_local(tmp_path / "nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShortcotError, match="cannot find model 'org/missing-model'"):
        resolve_local("org/missing-model")


def test_push_folder_uses_api_without_network(tmp_path):
    api = mock.Mock()
    api.create_repo.return_value = "https://hf.co/me/x"
    assert push_folder(tmp_path, "me/x", private=True, api=api) == "https://hf.co/me/x"
    api.create_repo.assert_called_once_with("me/x", private=True, repo_type="model", exist_ok=True)
    assert api.upload_folder.call_args.kwargs["repo_id"] == "me/x"
    api.upload_folder.side_effect = OSError("401")
    with pytest.raises(ShortcotError, match="hf auth login"):
        push_folder(tmp_path, "me/x", api=api)


def test_push_folder_with_a_new_card_is_one_commit_and_copies_nothing(tmp_path, monkeypatch):
    """A new README (the card plus a table) goes up with the folder's files in one commit;
    each file is read where it is, ignored ones stay out, the folder is left as it was."""
    import shutil

    folder = tmp_path / "model"
    (folder / "checkpoint-2").mkdir(parents=True)
    (folder / ".git").mkdir()
    for name in ("config.json", "model.safetensors", "cache-1.arrow", "checkpoint-2/x.pt"):
        (folder / name).write_text(name)
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / "README.md").write_text("# model\n")

    def no_copy(*args, **kwargs):
        raise AssertionError("push_folder copied a file")

    for name in ("copy", "copy2", "copyfile", "copytree"):
        monkeypatch.setattr(shutil, name, no_copy)
    api = mock.Mock()
    api.create_repo.return_value = "https://hf.co/datasets/me/x"
    url = push_folder(
        folder,
        "me/x",
        repo_type="dataset",
        api=api,
        commit_message="with the table",
        ignore_patterns=["checkpoint-*", "cache-*.arrow"],
        readme="# model\n\n| table |\n",
    )
    assert url == "https://hf.co/datasets/me/x"
    api.upload_folder.assert_not_called()
    api.create_commit.assert_called_once()
    kw = api.create_commit.call_args.kwargs
    assert (kw["repo_id"], kw["repo_type"], kw["commit_message"]) == (
        "me/x",
        "dataset",
        "with the table",
    )
    ops = {op.path_in_repo: op.path_or_fileobj for op in kw["operations"]}
    assert ops == {
        "config.json": str(folder.resolve() / "config.json"),
        "model.safetensors": str(folder.resolve() / "model.safetensors"),
        "README.md": b"# model\n\n| table |\n",
    }
    assert (folder / "README.md").read_text() == "# model\n"  # the folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_run_cli_prints_one_line_and_exits_2():
    code = (
        "from artifacts.errors import run_cli, ShortcotError\n"
        "def main(argv):\n    raise ShortcotError('bad density 2.0;\\n use a value in (0, 1]')\n"
        "run_cli(main)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: bad density 2.0; use a value in (0, 1]"]
    assert json.dumps(proc.stdout) == '""'
