"""The pipeline's typed config (`artifacts.cli`: ``--config recipe.yaml`` and ``--flags``).

The defaults run the whole DLER story on the built-in CPU testbed; the GPU recipe
(`configs/pipeline/r1_1.5b_gpu.yaml`) points the same stages at
DeepSeek-R1-Distill-Qwen-1.5B with vLLM.

Every stage is given its settings the same way: the stage's recipe (``*_config``), then what
the pipeline decides (model, data, output, grader), then the user's changes (``*_args``, a
mapping of the stage command's own field names), written to one YAML file that the stage
command reads with ``--config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from artifacts.cli import YamlMapping, arg


@dataclass
class PipelineConfig:
    """Settings of ``python -m pipeline run|publish``."""

    workdir: str = arg("runs/pipeline", "every stage's output goes under this folder")
    base_model: str = arg(
        "", "the model to make concise (folder or Hub id); empty = build the CPU testbed"
    )
    testbed_out: str = arg(
        "runs/testbed", "where the testbed is built or reused (its model is the base model)"
    )
    testbed_preset: str = arg("default", "testbed preset (default | checks | tiny)")
    train_data: str = arg("", "RL and distillation problems (default: the testbed's train split)")
    test_data: str = arg("", "evaluation problems (default: the testbed's test split)")
    grader: str = arg(
        "testbed",
        "grader shared by RL rewards, distillation and evaluation (math | testbed | module:function)",
    )
    rl_config: str = arg(
        "configs/train/dler_testbed_staged.yaml", "train.rl recipe of the DLER stage"
    )
    rl_args: YamlMapping = arg(
        {}, "train.rl settings that change the recipe, e.g. '{max_steps: 20}'"
    )
    rl2_config: str = arg(
        "configs/train/dler_testbed_tight.yaml",
        "optional second RL stage, ThinkPrune-style (arXiv 2504.01296): a separate train.rl run "
        "continuing from the first stage's model (fresh optimizer state) with its own recipe, "
        "e.g. a tighter L_T; its output is the 'dler' model. Empty = one stage",
    )
    rl2_args: YamlMapping = arg({}, "train.rl settings that change the rl2 recipe")
    merge_density: float = arg(0.25, "merge.selective density (DLER section 4.6: 0.25)")
    merge_scale: float = arg(0.7, "merge.selective scale (DLER section 4.6: 0.7)")
    merge_scope: Literal["tensor", "global"] = arg("tensor", "merge.selective selection scope")
    merge_args: YamlMapping = arg({}, "other merge.selective settings, e.g. '{dtype: bfloat16}'")
    train_launcher: str = arg(
        "",
        "command that starts the two training stages (rl, distill_sft) instead of plain python, "
        "e.g. 'accelerate launch --num_processes 8' on a GPU node",
    )
    distill_teacher: str = arg(
        "base",
        "where the compressed chains come from: base (sample the base model), dler (sample the "
        "DLER model), or a JSONL file / folder of existing traces",
    )
    distill_build_config: str = arg("configs/distill/build_testbed.yaml", "distill.build recipe")
    distill_build_args: YamlMapping = arg({}, "distill.build settings that change the recipe")
    distill_sft_config: str = arg("configs/distill/sft_testbed.yaml", "distill.sft recipe")
    distill_sft_args: YamlMapping = arg({}, "distill.sft settings that change the recipe")
    eval_config: str = arg(
        "configs/evals/testbed.yaml", "evals.run settings shared by all four evaluations"
    )
    eval_args: YamlMapping = arg(
        {}, "evals.run settings that change the recipe, e.g. '{limit: 64}'"
    )
    threads: int = arg(
        1,
        "torch CPU threads of every stage (OMP_NUM_THREADS); 0 leaves torch's default (the GPU "
        "recipe). The testbed default is 1: its tiny models gain nothing from more, slow down "
        "badly when other jobs share the cores (RL steps of 27-58 s with 2 threads beside two "
        "other jobs on 2 cores, 1.7 s with one), and a thread count changes float results",
    )
    stage_threads: YamlMapping = arg(
        {"testbed": 2, "rl2": 2},
        "torch CPU threads of particular stages (stage name: threads), instead of threads, for "
        "stages that run by themselves: the testbed build always does (every other stage "
        "reads its output); in the default story rl2 starts after the distillation branch and "
        "the base's evaluation have ended (sharing the cores, 3 threads on 2, it is slower, "
        "not different). Fixed per stage, so results never depend on timing; on the machine "
        "this was measured on, 2 threads give the same numbers bit for bit as 1 "
        "(tests/test_testbed.py and tests/test_train_rollouts.py check it) in 0.6x (testbed) "
        "and 0.75x (RL) the time",
    )
    jobs: int = arg(
        0,
        "stages run at once, each as soon as the stages it reads from have finished; 0 = the "
        "cores available divided by threads (1 when threads is 0, e.g. on GPUs). Results do "
        "not depend on it: every stage is its own process on its own thread count",
    )

    def resolved_jobs(self) -> int:
        """How many stages run at once (``jobs``, or what 0 means on this machine)."""
        import os

        if self.jobs < 0:
            from artifacts.errors import ShortcotError

            raise ShortcotError(f"jobs must be 0 (automatic) or positive, got {self.jobs}")
        if self.jobs:
            return self.jobs
        if self.threads <= 0:
            return 1
        return max(1, len(os.sched_getaffinity(0)) // self.threads)
