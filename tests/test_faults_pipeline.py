"""Fault injection on the pipeline's training stages: ``rl`` and ``distill_sft`` killed
(SIGKILL, `tests/kill_at.py` as the pipeline's launcher) while saving a checkpoint and
after moving their output into place, then rerun: they resume (``--resume``) and finish
with exactly the weights of an uninterrupted run; a stage whose settings changed starts
over cleanly (``--force``) instead of failing on the old checkpoints.
"""

from __future__ import annotations

import random
import sys

import pytest
from conftest import make_tiny_model_dir
from faults_support import KILL_AT, child_env, same_weights

from artifacts.errors import ShortcotError
from artifacts.jsonl import write_jsonl
from artifacts.resume import checkpoint_dirs, is_complete
from pipeline.config import PipelineConfig
from pipeline.plan import plan
from pipeline.stages import decide, run_stage

RL = {
    "max_steps": 3,
    "save_steps": 1,
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "max_completion_length": 8,
    "reward_method": "correctness",  # with the parity grader: rewards vary, the model learns
    "dynamic_sampling": False,
    "learning_rate": 0.001,
}
SAVE_2 = "transformers.trainer_callback:TrainerState.save_to_json:2"  # mid-save of checkpoint-2
AFTER_MOVE = "artifacts.outdir:move_into_place:1:after"  # output in place, no record yet


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    from testbed.task import generate_split, to_record
    from testbed.teacher import teacher_completion

    root = tmp_path_factory.mktemp("pipeline_faults")
    make_tiny_model_dir(root / "base", tiny_tokenizer, seed=0)
    problems = generate_split("train", 8, 0, 2, 3)
    rows = [to_record(p, "train", i) for i, p in enumerate(problems)]
    write_jsonl(root / "train.jsonl", rows)
    rng = random.Random(0)
    traces = [
        {"id": r["id"], "problem": p.text, "reference": str(p.answer),
         "completion": teacher_completion(p, rng)}
        for r, p in zip(rows[:4], problems)
    ]  # fmt: skip
    write_jsonl(root / "traces.jsonl", traces)
    return root


def config(root, **extra) -> PipelineConfig:
    settings = dict(
        workdir=str(root / "run"),
        base_model=str(root / "base"),
        train_data=str(root / "train.jsonl"),
        test_data=str(root / "train.jsonl"),
        distill_teacher=str(root / "traces.jsonl"),
        grader="test_train_trainer:parity_grade",  # rewards that vary on a random model
        distill_build_args={"strategy": "first-correct"},
        distill_sft_args={"max_steps": 3, "save_steps": 1, "per_device_train_batch_size": 2},
        train_launcher=f"{sys.executable} {KILL_AT}",
        rl_args=RL,
        rl2_config="",  # one RL stage: its output is the DLER model
    )
    return PipelineConfig(**{**settings, **extra})


def stage_runner(root, cfg, capsys):
    stages = {s.name: s for s in plan(cfg)}
    state, logs = root / "run" / ".stages", root / "run" / "logs"

    def run(name, kill_at=None):
        capsys.readouterr()
        env = child_env(**({"SHORTCOT_KILL_AT": kill_at} if kill_at else {}))
        try:
            status = run_stage(stages[name], state, logs, env=env)
        except ShortcotError as err:
            status = str(err)
        printed = capsys.readouterr().out
        command = next(
            (ln for ln in printed.splitlines() if f" -m {stages[name].module}" in ln), ""
        )
        return status, command, printed

    return stages, state, run


def test_killed_rl_stage_resumes_to_the_uninterrupted_model(setup, tmp_path, capsys):
    from train import rl

    cfg = config(setup)
    stages, state, run = stage_runner(setup, cfg, capsys)
    stage = stages["rl"]
    work, out = stage.work, stage.output

    status, _, _ = run("rl", SAVE_2)  # killed while writing checkpoint-2
    assert "exit -9" in status and not out.exists()
    ckpts = checkpoint_dirs(work)
    assert [c.name for c in ckpts] == ["checkpoint-1", "checkpoint-2"]
    assert is_complete(ckpts[0]) and not is_complete(ckpts[1])
    assert decide(stage, state).describe() == "to resume"

    status, command, _ = run("rl", AFTER_MOVE)  # resumes; killed once the model is in place
    assert "exit -9" in status and "--resume" in command and "--force" not in command
    assert out.exists() and not (state / "rl.json").exists()

    status, command, printed = run("rl")  # the output is complete: recorded, not retrained
    assert status == "cached" and command == "" and "completed by the interrupted run" in printed
    assert decide(stage, state).describe() == "up to date"

    reference = tmp_path / "reference"
    flags = [x for key, value in RL.items() for x in ("--" + key, str(value))]
    argv = ["--config", str(cfg.rl_config), "--model", str(setup / "base"),
            "--data", str(setup / "train.jsonl"), "--grader", "test_train_trainer:parity_grade",
            *flags, "--out", str(reference)]  # fmt: skip
    rl.train(*rl.parse_args(argv))
    assert same_weights(out, reference) and not same_weights(reference, setup / "base")

    # Other settings with the old run's checkpoints still there: start over, cleanly.
    changed = config(setup, rl_args={**RL, "learning_rate": 0.002, "max_steps": 1})
    stages2, _, run2 = stage_runner(setup, changed, capsys)
    assert checkpoint_dirs(work)  # the killed run never removed them
    status, command, _ = run2("rl")
    assert status == "ran" and "--force" in command and "--resume" not in command
    assert not same_weights(out, reference) and not work.exists()


def test_killed_distill_sft_stage_resumes_to_the_uninterrupted_model(setup, tmp_path, capsys):
    from distill import sft

    cfg = config(setup)
    stages, state, run = stage_runner(setup, cfg, capsys)
    from distill import build

    stages["distill_data"].write_config()
    build.build(*build.parse_args(stages["distill_data"].args))  # its input, made in-process
    stage = stages["distill_sft"]

    status, _, _ = run("distill_sft", SAVE_2)
    assert "exit -9" in status and not stage.output.exists()
    assert not is_complete(checkpoint_dirs(stage.work)[-1])
    status, command, _ = run("distill_sft")
    assert status == "ran" and "--resume" in command

    reference = tmp_path / "reference"
    recipe = sft.parse_args(
        ["--config", cfg.distill_sft_config, "--student", str(setup / "base"),
         "--data", str(stages["distill_data"].output), "--out", str(reference),
         "--max_steps", "3", "--save_steps", "1", "--per_device_train_batch_size", "2"],
    )  # fmt: skip
    sft.train(*recipe)
    assert same_weights(stage.output, reference) and not same_weights(reference, setup / "base")
