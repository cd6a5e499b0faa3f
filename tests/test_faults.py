"""Fault injection: the README's promise ("Errors, outputs, resuming") under hostile use.

Every fault must end in exit code 2 with exactly one ``error: ...`` line on stderr and the
output path untouched, and a rerun once the fault is gone must finish with the same result
as an uninterrupted run. Faults: read-only and full disks (a real tmpfs where this machine
lets the tests mount one, and patched writers everywhere), SIGKILL at chosen points
(`tests/kill_at.py`), malformed configs and arguments, adapters for another base, hostile
answers for the grader. The pipeline's resume of killed training stages is in
`test_faults_pipeline.py`.
"""

# ruff: noqa: F811  (pytest fixtures imported from faults_support are parameters by name)
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model_dir
from faults_support import (  # noqa: F401  (fixtures are used by name)
    _eval_args,
    _no_progress_bars,
    assets,
    eval_ref,
    one_error,
    read_only_dir,
    run_main,
    siblings,
)

# ------------------------------------------------------ one line instead of a traceback


def _command(name: str, a: Path, out: Path) -> tuple:
    """(main, argv) of each command writing to ``out``, with otherwise valid inputs."""
    from distill import build as distill_build
    from distill import sft
    from evals import compare
    from evals import run as evals_run
    from merge import selective, sweep
    from pipeline import __main__ as pipeline
    from testbed import build as testbed_build
    from train import rl

    problems = a / "problems.jsonl"
    return {
        "merge.selective": (selective.main, ["--base", a / "base", "--tuned", a / "tuned",
                                             "--out", out]),
        "merge.sweep": (sweep.main, ["--base", a / "base", "--tuned", a / "tuned", "--data",
                                     problems, "--out", out]),
        "distill.build": (distill_build.main, ["--teacher", a / "traces.jsonl", "--out", out,
                                               "--grader", "testbed"]),
        "distill.sft": (sft.main, ["--student", a / "base", "--data", a / "sft_data", "--out",
                                   out]),
        "train.rl": (rl.main, ["--config", a / "rl.yaml", "--out", out]),
        "testbed.build": (testbed_build.main, ["--out", out, "--preset", "tiny",
                                               "--no-progress"]),
        "evals.run": (evals_run.main, ["--model", a / "base", "--data", problems, "--out", out,
                                       "--grader", "testbed", "--no-progress"]),
        "evals.compare": (compare.main, ["--dirs", a / "eval_ref", "--out", out]),
        "pipeline": (pipeline.main, ["run", "--workdir", out, "--base_model", a / "base",
                                     "--train_data", problems, "--test_data", problems]),
    }[name]  # fmt: skip


COMMANDS = [
    "merge.selective",
    "merge.sweep",
    "distill.build",
    "distill.sft",
    "train.rl",
    "testbed.build",
    "evals.run",
    "evals.compare",
    "pipeline",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output_folder_is_one_line(command, assets, eval_ref, read_only_dir, capsys):
    out = read_only_dir / "sub" / "out"
    main, argv = _command(command, assets, out)
    line = one_error(*run_main(main, argv, capsys)[::2])
    assert "read-only" in line or "not writable" in line, line
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize(
    "case",
    [
        "config_not_yaml",
        "config_binary",
        "config_folder",
        "override_not_yaml",
        "num_generations",
        "max_steps",
        "resume_nothing",
        "grader_not_callable",
        "empty_model",
    ],
)
def test_train_rl_refuses_bad_settings_before_loading_the_model(
    case, assets, tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForCausalLM

    from train import rl

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_model)
    out = tmp_path / "out"
    argv = ["--config", assets / "rl.yaml", "--out", out]
    expect = {
        "config_not_yaml": ("not valid YAML", {"--config": assets / "not_yaml.yaml"}),
        "config_binary": ("not a text file", {"--config": assets / "binary.yaml"}),
        "config_folder": ("is a folder", {"--config": assets}),
        "override_not_yaml": ("invalid float value", ["--learning_rate", "[1,"]),
        "num_generations": ("does not divide", ["--num_generations", "3"]),
        "max_steps": ("max_steps must be >= 1", ["--max_steps", "-5"]),
        "resume_nothing": ("holds no checkpoint", ["--resume"]),
        "grader_not_callable": ("not a function", ["--grader", "not_callable:grade"]),
        "empty_model": ("is empty", ["--model", assets / "empty_model"]),
    }[case]
    message, change = expect
    if isinstance(change, dict):
        argv[1] = change["--config"]
    else:
        argv += change
    line = one_error(*run_main(rl.main, argv, capsys)[::2])
    assert message in line, line
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("case", ["max_steps", "resume_nothing", "config_not_yaml", "empty"])
def test_distill_sft_refuses_bad_settings(case, assets, tmp_path, capsys):
    from distill import sft

    out = tmp_path / "out"
    argv = ["--student", assets / "base", "--data", assets / "sft_data", "--out", out]
    argv += {
        "max_steps": ["--max-steps", "-5"],
        "resume_nothing": ["--resume"],
        "config_not_yaml": ["--config", assets / "not_yaml.yaml"],
        "empty": ["--student", assets / "empty_model"],
    }[case]
    line = one_error(*run_main(sft.main, argv, capsys)[::2])
    assert {
        "max_steps": "max_steps must be -1",
        "resume_nothing": "holds no checkpoint",
        "config_not_yaml": "not valid YAML",
        "empty": "is empty",
    }[case] in line
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("case", ["not_callable", "config_not_yaml", "config_wrong_type"])
def test_evals_and_distill_build_refuse_before_generating(
    case, assets, tmp_path, capsys, monkeypatch
):
    import evals.backends
    from distill import build as distill_build
    from evals import run as evals_run

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(evals.backends, "load_backend", no_model)
    monkeypatch.setattr(evals_run, "load_backend", no_model)
    (tmp_path / "wrong_type.yaml").write_text("limit: many\n")  # a key no flag overrides
    out = tmp_path / "out"
    change = {
        "not_callable": ["--grader", "not_callable:grade"],
        "config_not_yaml": ["--config", assets / "not_yaml.yaml"],
        "config_wrong_type": ["--config", tmp_path / "wrong_type.yaml"],
    }[case]
    line = one_error(*run_main(evals_run.main, [*_eval_args(assets, out), *change], capsys)[::2])
    expected = {
        "not_callable": "not a function",
        "config_not_yaml": "not valid YAML",
        "config_wrong_type": "invalid int value: 'many'",
    }[case]
    assert expected in line, line
    assert not out.exists()
    if case != "config_wrong_type":
        argv = ["--teacher", assets / "base", "--data", assets / "problems.jsonl", "--out", out]
        code, _, err = run_main(distill_build.main, [*argv, *change], capsys)
        assert expected in one_error(code, err)
        assert not out.exists() and not (tmp_path / "out.work").exists()


def test_pipeline_config_not_yaml(assets, tmp_path, capsys):
    from pipeline import __main__ as pipeline

    line = one_error(
        *run_main(
            pipeline.main,
            ["run", "--config", assets / "binary.yaml", "--workdir", tmp_path],
            capsys,
        )[::2]
    )
    assert "not a text file" in line


def _lora_for_other_base(root: Path, tokenizer) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    make_tiny_model_dir(root / "wide", tokenizer, hidden_size=48)
    model = AutoModelForCausalLM.from_pretrained(root / "wide", dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    peft.save_pretrained(root / "lora_wide")
    return root / "lora_wide"


@pytest.mark.parametrize("dry_run", [True, False])
def test_merge_lora_made_for_another_base(dry_run, assets, tiny_tokenizer, tmp_path, capsys):
    from merge import selective

    adapter = _lora_for_other_base(tmp_path, tiny_tokenizer)
    out = tmp_path / "out"
    argv = ["--base", assets / "base", "--tuned", adapter, "--out", out]
    line = one_error(
        *run_main(selective.main, argv + (["--dry-run"] if dry_run else []), capsys)[::2]
    )
    assert "another base" in line and "q_proj" in line, line
    assert not out.exists() and siblings(out) == []


def test_empty_folder_as_model_everywhere(assets, tmp_path, capsys):
    from evals import run as evals_run
    from merge import selective

    empty = assets / "empty_model"
    for main, argv in (
        (evals_run.main, _eval_args(assets, tmp_path / "e", empty)),
        (selective.main, ["--base", empty, "--tuned", assets / "tuned", "--out", tmp_path / "m"]),
    ):
        assert "is empty" in one_error(*run_main(main, argv, capsys)[::2])
    assert sorted(os.listdir(tmp_path)) == []
