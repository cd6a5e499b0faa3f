"""The pipeline's plan (pure) and publishing (mocked Hub)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest

from artifacts.cli import parse_args
from artifacts.errors import ShortcotError
from pipeline.config import PipelineConfig
from pipeline.plan import EVALS_RUN, STAGE_NAMES, TRAIN_RL, plan
from pipeline.publish import publish


def _by_name(stages):
    return {s.name: s for s in stages}


def _load(path: str, *flags: str) -> PipelineConfig:
    (cfg,) = parse_args([PipelineConfig], ["--config", path, *flags], prog="pipeline run")
    return cfg


def test_default_plan_runs_the_dler_story_on_the_testbed():
    stages = plan(PipelineConfig())
    assert [s.name for s in stages] == [
        "testbed",
        "rl",
        "rl2",
        "merge",
        "distill_data",
        "distill_sft",
        "eval_base",
        "eval_dler",
        "eval_merged",
        "eval_distilled",
        "compare",
    ]
    s = _by_name(stages)
    assert s["testbed"].force_flag is None  # testbed.build has its own cache: never force a rebuild
    rl, rl2 = s["rl"].config, s["rl2"].config
    assert rl[TRAIN_RL["model"]] == "runs/testbed/model"
    assert rl[TRAIN_RL["grader"]] == "testbed"
    # every stage reads its settings from one YAML file in the state folder
    assert all(x.args == ["--config", f"runs/pipeline/.stages/{x.name}.yaml"] for x in stages)
    # the second RL stage continues from the first stage's model into the DLER model
    rl_out = rl[TRAIN_RL["out"]]
    assert rl_out == "runs/pipeline/models/dler_stage1" and s["rl"].output.as_posix() == rl_out
    assert rl2[TRAIN_RL["model"]] == rl_out
    assert rl2[TRAIN_RL["out"]] == "runs/pipeline/models/dler"
    assert s["rl2"].settings["model"] == s["rl"].key()  # a new first stage reruns the second
    assert s["merge"].settings["tuned"] == s["rl2"].key()
    assert s["eval_dler"].settings["model"] == s["rl2"].key()
    merge = s["merge"].config
    assert merge["tuned"] == "runs/pipeline/models/dler"
    assert merge["density"] == 0.25 and merge["scale"] == 0.7
    assert s["eval_distilled"].config[EVALS_RUN["model"]] == "runs/pipeline/models/distilled"
    assert all(s[f"eval_{m}"].resumes_in_place for m in ("base", "dler", "merged", "distilled"))


def test_changed_upstream_settings_invalidate_downstream_stages(tmp_path):
    a = _by_name(plan(PipelineConfig()))
    b = _by_name(plan(PipelineConfig(merge_density=0.5)))
    assert a["rl"].key() == b["rl"].key()
    assert a["merge"].key() != b["merge"].key()
    assert a["eval_merged"].key() != b["eval_merged"].key()
    assert a["eval_dler"].key() == b["eval_dler"].key()
    c = _by_name(plan(PipelineConfig(rl_args={"learning_rate": 1e-5})))
    assert c["rl"].config["learning_rate"] == 1e-5
    assert c["rl"].key() != a["rl"].key()
    assert c["merge"].key() != a["merge"].key()  # the tuned model changed
    assert c["eval_dler"].key() != a["eval_dler"].key()
    assert c["eval_base"].key() == a["eval_base"].key()


def test_gpu_recipe_points_at_r1_and_skips_the_testbed():
    stages = _by_name(plan(_load("configs/pipeline/r1_1.5b_gpu.yaml")))
    assert "testbed" not in stages
    assert stages["rl"].config[TRAIN_RL["model"]] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert stages["eval_base"].config[EVALS_RUN["data"]] == "math500"
    # training stages run under accelerate on the GPU node; the others in plain Python
    launch = ["accelerate", "launch", "--num_processes", "8", "-m"]
    assert stages["rl"].command(False)[:6] == [*launch, "train.rl"]
    assert stages["distill_sft"].command(False)[:6] == [*launch, "distill.sft"]
    assert stages["merge"].command(False)[1:3] == ["-m", "merge.selective"]
    single = _by_name(plan(_load("configs/pipeline/r1_1.5b_gpu.yaml", "--train_launcher", "")))
    assert single["rl"].command(False)[1:3] == ["-m", "train.rl"]
    assert single["rl"].key() != stages["rl"].key()  # a launcher change reruns training


def test_bad_pipeline_config_is_one_clear_error():
    with pytest.raises(ShortcotError, match="train_data and test_data"):
        plan(PipelineConfig(base_model="org/model"))
    with pytest.raises(ShortcotError, match="config file .* does not exist"):
        plan(PipelineConfig(rl_config="configs/train/nope.yaml"))


def _uploaded(api) -> dict:
    """path_in_repo -> content of the one commit `publish` made (mocked Hub)."""
    ops = api.create_commit.call_args.kwargs["operations"]
    out = {}
    for op in ops:
        src = op.path_or_fileobj
        out[op.path_in_repo] = src.decode() if isinstance(src, bytes) else Path(src).read_text()
    return out


def test_publish_adds_the_eval_table_to_the_uploaded_card(tmp_path):
    cfg = PipelineConfig(workdir=str(tmp_path / "run"), testbed_out=str(tmp_path / "tb"))
    model = tmp_path / "run" / "models" / "merged"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "README.md").write_text("---\ntags: [shortcot]\n---\n# merged\n")
    (tmp_path / "run" / "report").mkdir()
    (tmp_path / "run" / "report" / "table.md").write_text(
        "| run | accuracy |\n|---|---|\n| merged | 90 |\n"
    )
    api = mock.Mock()
    api.create_repo.return_value = "https://hf.co/me/m"
    assert publish(cfg, "merged", "me/m", api=api) == "https://hf.co/me/m"
    files = _uploaded(api)
    assert "| merged | 90 |" in files["README.md"] and "## Evaluation" in files["README.md"]
    assert "config.json" in files
    assert "Evaluation" not in (model / "README.md").read_text()  # the run itself is untouched
    with pytest.raises(ShortcotError, match="no finished model"):
        publish(cfg, "dler", "me/m", api=api)
    with pytest.raises(ShortcotError, match="cannot publish"):
        publish(cfg, "base", "me/m", api=api)


def test_publish_dataset_goes_to_a_dataset_repo_without_cache_files(tmp_path):
    cfg = PipelineConfig(workdir=str(tmp_path / "run"), testbed_out=str(tmp_path / "tb"))
    api = mock.Mock()
    with pytest.raises(ShortcotError, match="no finished dataset"):
        publish(cfg, "dataset", "me/d", api=api)
    data = tmp_path / "run" / "distill_data"
    data.mkdir(parents=True)
    for name in ("summary.json", "data-00000-of-00001.arrow", "cache-123.arrow", "README.md"):
        (data / name).write_text("{}" if name != "README.md" else "# compressed chains\n")
    (data / "checkpoint-3").mkdir()
    (data / "checkpoint-3" / "x.bin").write_text("x")
    (tmp_path / "run" / "report").mkdir()
    (tmp_path / "run" / "report" / "table.md").write_text("| run |\n|---|\n| distilled |\n")
    api.create_repo.return_value = "https://hf.co/datasets/me/d"
    assert publish(cfg, "dataset", "me/d", api=api) == "https://hf.co/datasets/me/d"
    assert api.create_repo.call_args.kwargs["repo_type"] == "dataset"
    assert api.create_commit.call_args.kwargs["repo_type"] == "dataset"
    files = _uploaded(api)
    assert sorted(files) == ["README.md", "data-00000-of-00001.arrow", "summary.json"]
    assert "# compressed chains" in files["README.md"] and "| distilled |" in files["README.md"]


def test_threads_set_every_stage_environment_and_key():
    """threads=1 runs every stage with OMP_NUM_THREADS=1, and is part of each stage's key
    (a thread count changes float results); threads=0 leaves the environment alone."""
    plain = plan(PipelineConfig(threads=0, stage_threads={}))
    pinned = plan(PipelineConfig(stage_threads={}))  # the testbed default: one thread
    assert all(s.env == {} for s in plain)
    assert all(s.env == {"OMP_NUM_THREADS": "1"} for s in pinned)
    assert all(a.key() != b.key() for a, b in zip(plain, pinned))
    with pytest.raises(ShortcotError, match="threads"):
        plan(PipelineConfig(threads=-1))


def test_stage_threads_override_threads_per_stage():
    """The testbed build runs by itself (every stage needs it), on 2 threads by default (the
    same weights as 1: tests/test_testbed.py), given to its own ``threads`` setting, which
    testbed.build applies over OMP_NUM_THREADS; so does rl2 (it starts after the side
    branch has ended); other stages keep ``threads``. A thread
    count is part of the stage's key; a stage this run lacks is ignored, a misspelt one
    is an error."""
    stages = _by_name(plan(PipelineConfig()))
    assert list(stages) == list(STAGE_NAMES)
    assert [n for n, s in stages.items() if not s.needs] == ["testbed"]  # all wait for it
    assert stages["testbed"].config["threads"] == 2
    assert stages["testbed"].env == {"OMP_NUM_THREADS": "2"}
    assert stages["rl2"].env == {"OMP_NUM_THREADS": "2"}
    others = [s for n, s in stages.items() if n not in ("testbed", "rl2")]
    assert all(s.env == {"OMP_NUM_THREADS": "1"} for s in others)
    more = _by_name(plan(PipelineConfig(stage_threads={"testbed": 3})))
    assert more["testbed"].config["threads"] == 3 and more["rl2"].env["OMP_NUM_THREADS"] == "1"
    assert more["testbed"].key() != stages["testbed"].key()
    assert more["rl2"].key() != stages["rl2"].key() and more["rl"].key() == stages["rl"].key()
    one = _by_name(plan(PipelineConfig(stage_threads={})))
    assert one["testbed"].config["threads"] == 1
    assert "rl2" not in _by_name(plan(PipelineConfig(rl2_config="", stage_threads={"rl2": 2})))
    gpu = _by_name(plan(_load("configs/pipeline/r1_1.5b_gpu.yaml")))
    assert "testbed" not in gpu and all(s.env == {} for s in gpu.values())
    with pytest.raises(ShortcotError, match="did you mean eval_merged"):
        plan(PipelineConfig(stage_threads={"eval_merge": 2}))
    with pytest.raises(ShortcotError, match="not a positive number"):
        plan(PipelineConfig(stage_threads={"rl": 0}))


def test_one_rl_stage_without_rl2_config():
    stages = _by_name(plan(PipelineConfig(rl2_config="")))
    assert "rl2" not in stages
    assert stages["rl"].config[TRAIN_RL["out"]] == "runs/pipeline/models/dler"
    assert stages["merge"].settings["tuned"] == stages["rl"].key()


def test_stage_settings_file_is_what_the_stage_reads(tmp_path):
    """The YAML a stage is given holds exactly its config (recipe, then the pipeline's
    values, then the user's *_args), and a change to it changes the stage's key."""
    import yaml

    stages = _by_name(plan(PipelineConfig(workdir=str(tmp_path), eval_args={"limit": 7})))
    ev = stages["eval_base"]
    assert ev.config["limit"] == 7
    ev.write_config()
    assert yaml.safe_load(ev.config_file.read_text()) == ev.config
    other = _by_name(plan(PipelineConfig(workdir=str(tmp_path), eval_args={"limit": 8})))
    assert other["eval_base"].key() != ev.key()
    assert other["eval_dler"].key() != stages["eval_dler"].key()
    assert other["rl"].key() == stages["rl"].key()


def test_pipeline_flags_and_mappings_parse():
    cfg = _load(
        "configs/pipeline/testbed.yaml", "--rl_args", "{max_steps: 3}", "--merge_density", "0.5"
    )
    assert cfg.rl_args == {"max_steps": 3} and cfg.merge_density == 0.5
    with pytest.raises(ShortcotError, match="not a YAML mapping|not a mapping"):
        _load("configs/pipeline/testbed.yaml", "--rl_args", "[1, 2]")


@pytest.mark.parametrize(
    "recipe", ["configs/pipeline/testbed.yaml", "configs/pipeline/r1_1.5b_gpu.yaml"]
)
def test_every_stage_parses_the_settings_the_pipeline_writes(recipe, tmp_path):
    """Each stage's YAML goes through that stage command's own parser (nothing runs)."""
    import importlib

    import torch

    stages = plan(_load(recipe, "--workdir", str(tmp_path)))
    for stage in stages:
        stage.write_config()
        argv = list(stage.args)
        if stage.module in ("train.rl", "distill.sft") and not torch.cuda.is_available():
            argv.append("--use_cpu")  # GPU recipes set bf16, checked against the machine
        importlib.import_module(stage.module).parse_args(argv)


def test_stages_need_exactly_what_they_read():
    """What may run side by side: the distillation branch and the base model's evaluation do
    not wait for RL; everything downstream of a model waits for the stage that makes it."""
    needs = {s.name: set(s.needs) for s in plan(PipelineConfig())}
    assert needs["rl"] == {"testbed"} and needs["rl2"] == {"testbed", "rl"}
    assert needs["merge"] == {"testbed", "rl2"}
    assert needs["distill_data"] == {"testbed"} and needs["eval_base"] == {"testbed"}
    assert needs["eval_merged"] == {"testbed", "merge"}
    assert needs["compare"] == {f"eval_{m}" for m in ("base", "dler", "merged", "distilled")}
    dler_teacher = {s.name: set(s.needs) for s in plan(PipelineConfig(distill_teacher="dler"))}
    assert dler_teacher["distill_data"] == {"testbed", "rl2"}
    assert PipelineConfig(threads=0).resolved_jobs() == 1  # GPU stages: one at a time
    assert PipelineConfig(jobs=3).resolved_jobs() == 3
