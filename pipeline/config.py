"""The pipeline's typed config (YAML file + ``key=value`` overrides, see artifacts.config).

The defaults run the whole DLER story on the built-in CPU testbed; the GPU recipe
(`configs/pipeline/r1_1.5b_gpu.yaml`) points the same stages at
DeepSeek-R1-Distill-Qwen-1.5B with vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PipelineConfig:
    """Settings of `python -m pipeline run`.

    workdir:        every stage's output goes under this folder.
    base_model:     the model to make concise (folder or Hub id); empty = build the testbed.
    testbed_out:    where the testbed is built / reused (its model is the base model).
    testbed_preset: testbed preset (default | tiny).
    train_data:     RL and distillation prompts (default: the testbed's train split).
    test_data:      evaluation problems (default: the testbed's test split).
    grader:         grader name shared by RL rewards, distillation and evaluation.
    rl_config:      train.rl recipe; rl_overrides: key=value changes to it.
    rl2_config:     optional second RL stage, ThinkPrune-style (arXiv 2504.01296): a separate
                    train.rl run that continues from the first stage's model (fresh optimizer
                    state) with its own recipe, e.g. a tighter L_T; its output is the "dler"
                    model. rl2_overrides: key=value changes to it.
    merge_*:        merge.selective settings (DLER section 4.6: density 0.25, scale 0.7).
    train_launcher: command that starts the two training stages (rl, distill_sft) instead of
                    plain ``python``, e.g. "accelerate launch --num_processes 8" on a GPU node.
    distill_teacher: where the compressed chains come from: "base" (sample the base model),
                    "dler" (sample the DLER model), or a JSONL file / folder of existing traces.
    distill_build_config / distill_sft_config: distill.build / distill.sft recipes, with
                    their overrides (key=value; the build's are turned into --flags).
    eval_config:    evals.run settings shared by all four evaluations; eval_overrides as
                    ``key=value`` (turned into --flags).
    threads:        torch CPU threads of every stage (OMP_NUM_THREADS); 0 leaves torch's
                    default (the GPU recipe). The testbed default is 1: its tiny models gain
                    nothing from more, slow down badly when other jobs share the cores
                    (measured: RL steps of 27-58 s with 2 threads beside two other jobs on
                    2 cores, 1.7 s with one), and a thread count changes float results, so
                    1 keeps the run machine-independent.
    """

    workdir: str = "runs/pipeline"
    base_model: str = ""
    testbed_out: str = "runs/testbed"
    testbed_preset: str = "default"
    train_data: str = ""
    test_data: str = ""
    grader: str = "testbed"
    rl_config: str = "configs/train/dler_testbed_staged.yaml"
    rl_overrides: list[str] = field(default_factory=list)
    rl2_config: str = "configs/train/dler_testbed_tight.yaml"
    rl2_overrides: list[str] = field(default_factory=list)
    merge_density: float = 0.25
    merge_scale: float = 0.7
    merge_scope: str = "tensor"
    train_launcher: str = ""
    distill_teacher: str = "base"
    distill_build_config: str = "configs/distill/build_testbed.yaml"
    distill_build_overrides: list[str] = field(default_factory=list)
    distill_sft_config: str = "configs/distill/sft_testbed.yaml"
    distill_sft_overrides: list[str] = field(default_factory=list)
    eval_config: str = "configs/evals/testbed.yaml"
    eval_overrides: list[str] = field(default_factory=list)
    threads: int = 1
