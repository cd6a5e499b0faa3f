"""`python -m merge.selective` and `python -m merge.sweep` as commands: the flags and
recipes (artifacts.cli), a dry run, and one-line errors that leave nothing behind."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from merge_reference import build_pair, edit_tensors

from artifacts.errors import ShortcotError, run_cli
from merge import selective, sweep
from merge.config import MergeConfig
from merge.selective import main, merge_models
from merge.sweep import SweepConfig


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    return build_pair(tmp_path_factory.mktemp("merge_pair"), tiny_tokenizer)


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
            "--push_to_hub",
            "--hub_model_id",
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


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture()
def broken(pair, tmp_path):
    """A writable copy of the tuned model to break in different ways."""
    return _copy(pair / "tuned", tmp_path / "broken")


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
        edit_tensors(
            broken, lambda sd: {k: v for k, v in sd.items() if "layers.1.mlp.up_proj" not in k}
        )
    elif case == "shape":
        edit_tensors(
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

        edit_tensors(broken, poison)
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


# ------------------------------------------------------------------ flags and recipes

RECIPES = sorted(Path(__file__).resolve().parent.parent.glob("configs/merge/*.yaml"))
REQUIRED = {"base": "B", "tuned": "T", "out": "O", "data": "D"}  # dummies a recipe may leave out


def _command_of(recipe: Path) -> str:
    """The command a recipe's header comment runs it with (``python -m merge.X``)."""
    return re.search(r"python -m (merge\.\w+)", recipe.read_text()).group(1)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses(recipe):
    import yaml

    values = yaml.safe_load(recipe.read_text())
    command = _command_of(recipe)
    if command == "merge.mergekit_method":  # a mergekit recipe, for mergekit's own parser
        from mergekit.config import MergeConfiguration

        import merge.mergekit_method  # noqa: F401  (registers magnitude_selective)

        assert MergeConfiguration.model_validate(values).merge_method == "magnitude_selective"
        return
    module = {"merge.selective": selective, "merge.sweep": sweep}[command]
    cfg, hub = module.parse_args(["--config", str(recipe), *_dummies(module, values)])
    for key, value in values.items():
        assert getattr(cfg, key) == value, key
    assert hub.hub_repo() is None


def _dummies(module, values: dict) -> list[str]:
    cfg_type = {selective: MergeConfig, sweep: SweepConfig}[module]
    names = {f.name for f in dataclasses.fields(cfg_type)}
    return [a for k, v in REQUIRED.items() if k in names and k not in values for a in (f"--{k}", v)]


def test_flags_recipe_and_aliases(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("density: 0.5\nexclude: [embed_tokens]\nscope: global\n")
    cfg, hub = selective.parse_args(
        ["--config", str(recipe), "--base", "B", "--tuned", "T", "--out", "O", "--scale", "1"]
        + ["--exclude", "lm_head", "--exclude", "norm", "--exclude-takes", "tuned", "--dry-run"]
        + ["--push-to-hub", "--hub_model_id", "me/m", "--hub_private_repo"]
    )
    assert (cfg.density, cfg.scale, cfg.scope) == (0.5, 1.0, "global")  # flags over the recipe
    assert cfg.exclude == ["embed_tokens", "lm_head", "norm"]  # --exclude adds to the list
    assert cfg.exclude_takes == "tuned" and cfg.dry_run and not cfg.force
    assert hub.hub_repo() == "me/m" and hub.hub_private_repo
    (cfg2, _) = selective.parse_args(["--base", "B", "--tuned", "T", "--out", "O"])
    assert cfg2 == MergeConfig(base="B", tuned="T", out="O")  # defaults stated once
    s, _ = sweep.parse_args(["--base", "B", "--tuned", "T", "--data", "D", "--out", "O"])
    assert (s.densities, s.scales) == ([0.1, 0.25, 0.5], [0.5, 0.7, 1.0])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtype", "half"], "invalid choice"),
        (["--density"], "expected one argument"),
        (["--push_to_hub"], "--hub_model_id"),
        (["--densty", "0.3"], "unrecognized"),
    ],
)
def test_bad_flags_are_one_line(argv, message, capsys):
    code, _, err = cli(["--base", "B", "--tuned", "T", "--out", "O", *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_unknown_recipe_key_suggests_the_field(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("densty: 0.3\n")
    code, _, err = cli(["--config", str(tmp_path / "r.yaml")], capsys)
    assert code == 2 and "densty (did you mean density?)" in err


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exc:
        selective.main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    for f in dataclasses.fields(MergeConfig):
        assert f"--{f.name}" in text and f.metadata["help"], f.name
    assert "--hub_model_id" in text and "(default 0.25)" not in text and "DLER: 0.25" in text


def test_unknown_dtype_from_python_is_one_line(pair, tmp_path):
    cfg = MergeConfig(base=str(pair / "base"), tuned=str(pair / "tuned"), out=str(tmp_path / "m"))
    cfg.dtype = "float8"
    with pytest.raises(ShortcotError, match="unknown dtype 'float8'; use one of bfloat16"):
        merge_models(cfg)


def test_benchmark_scripts_parse_flags_and_recipes(tmp_path):
    """benchmarks/merge_vs_mergekit.py and its plain pass: the common CLI convention."""
    import yaml

    from artifacts.cli import to_yaml_values
    from benchmarks import _plain_pass, merge_vs_mergekit

    (args,) = merge_vs_mergekit.parse_args(["--runs", "5", "--skip-mergekit"])
    assert (args.runs, args.skip_mergekit, args.layers, args.threads) == (5, True, 14, None)
    (plain,) = _plain_pass.parse_args(["--base", "b", "--tuned", "t", "--out", "o"])
    assert (plain.base, plain.threads) == ("b", 1)
    for script, cfg in ((merge_vs_mergekit, args), (_plain_pass, plain)):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cfg))
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(to_yaml_values(cfg)))
        assert script.parse_args(["--config", str(recipe)]) == (cfg,)
    with pytest.raises(ShortcotError, match="unrecognized"):
        merge_vs_mergekit.parse_args(["--best_of", "3"])
