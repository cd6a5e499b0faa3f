"""The typed configuration of ``python -m train.rl`` (YAML file + ``key=value`` overrides via
`artifacts.config.load_config`). Every published recipe is a file in ``configs/train/``.

The fields mirror TRL's ``GRPOConfig`` names where they map to it one to one (see
`to_grpo_kwargs`), so a TRL user reads them without a glossary; anything else of
``GRPOConfig`` can be set through ``trl``.

How the DLER / Laser optimiser settings map onto TRL 1.16 (docs/algorithms.md §1.3):

* clip-higher: ``epsilon`` (low, 0.2) and ``epsilon_high`` (0.28);
* dual-clip c = 10: TRL's ``delta`` caps the ratio at ``delta`` inside
  ``-min(r * A, clip(r) * A)``; for ``delta > 1 + epsilon_high`` this equals PPO dual-clip
  (Ye et al. 2020; veRL ``clip_ratio_c``) ``max(min(...), c * A)`` for A < 0, and changes
  nothing for A > 0 (there ``clip(r) <= 1 + epsilon_high < delta``), so no override is needed;
* token-mean loss: ``loss_type="dapo"`` (sum over the batch's tokens / number of tokens);
* KL: ``beta`` with TRL's k3 estimator (veRL's ``low_var_kl``, unclamped);
* entropy bonus: ``entropy_coef``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from artifacts.errors import ShortcotError
from evals.grading import PROMPT_OPENS_THINK
from evals.prompts import DEFAULT_PROMPT_TEMPLATE
from train.rewards import RewardConfig


@dataclass
class LaserDConfig:
    """LASER-D's adaptive targets (used when ``reward.method`` is laser_d or laser_de).

    every_steps:   re-sample the monitoring set every N optimizer steps (and at step 0).
    monitor_data:  problems of the monitoring set (a ``load_problems`` spec); empty = a random
                   ``monitor_size`` subset of the training problems.
    monitor_size:  number of monitoring prompts (Laser: 500, each with num_generations rollouts).
    rounding:      C_d rounding: "ceil" (paper: 6, 3, 1 for K = 8) or "floor" (released code).
    budget_step:   spacing of the candidate budgets [L_T, L_T + step, ..., max_completion_length].
    """

    every_steps: int = 20
    monitor_data: str = ""
    monitor_size: int = 500
    rounding: str = "ceil"
    budget_step: int = 1024


@dataclass
class LoraSettings:
    """LoRA through peft (off by default). ``merge`` folds the adapter into the base weights
    when saving, so the final model is a standard HF folder."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    merge: bool = True


@dataclass
class RLConfig:
    """Everything one RL run needs. See ``configs/train/*.yaml`` for the published recipes."""

    # (the KEY_HELP text below documents every key for ``python -m train.rl --help``)

    # what to train on
    model: str = ""
    data: str = ""
    out: str = ""
    work_dir: str = ""  # checkpoints and logs; default: OUT.work next to OUT
    problem_column: str = "problem"
    answer_column: str = "answer"
    id_column: str | None = None
    split: str | None = None
    limit: int | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    system_prompt: str | None = None
    prompt_opens_think: str = "auto"  # auto (read the chat template) | yes | no
    # the method
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: str = "dler"  # dler | grpo | group_mean
    dynamic_sampling: bool = True
    max_extra_rounds: int = 4
    laser_d: LaserDConfig = field(default_factory=LaserDConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    # the optimiser (GRPOConfig names)
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0  # int = steps, float < 1 = fraction of max_steps (transformers 5)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    num_generations: int = 16
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    steps_per_generation: int | None = None
    num_iterations: int = 1
    max_steps: int = 450
    max_completion_length: int = 4000
    temperature: float = 1.0
    top_p: float = 1.0
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    delta: float | None = 10.0
    beta: float = 0.0
    entropy_coef: float = 0.0
    loss_type: str = "dapo"
    mask_truncated_completions: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    bf16: bool = False
    # float32 master weights: AdamW on bf16 weights loses most small updates (measured on
    # SmolLM2-135M, a bf16 checkpoint: two steps at lr 1e-6 changed 0.39% of the entries in
    # bf16 and 99.4% in float32). With bf16=true the forward still runs in bf16 autocast;
    # the final model is saved in the checkpoint's own dtype.
    model_dtype: str = "float32"
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 2
    report_to: list[str] = field(default_factory=lambda: ["none"])
    run_name: str | None = None
    keep_checkpoints: bool = False
    trl: dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig field

    def validate(self) -> None:
        if self.model_dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ShortcotError(
                f"model_dtype {self.model_dtype!r} is not float32, bfloat16, float16 or auto "
                "(float32 keeps master weights; auto trains in the checkpoint's dtype)"
            )
        for key in ("model", "data", "out"):
            if not getattr(self, key):
                raise ShortcotError(
                    f"config key {key} is empty; set it in the YAML or as {key}=VALUE"
                )
        if self.advantage not in ("dler", "grpo", "group_mean"):
            raise ShortcotError(f"advantage {self.advantage!r} is not dler, grpo or group_mean")
        if self.laser_d.rounding not in ("ceil", "floor"):
            raise ShortcotError(f"laser_d.rounding {self.laser_d.rounding!r} is not ceil or floor")
        if self.prompt_opens_think not in PROMPT_OPENS_THINK:
            raise ShortcotError(
                f"prompt_opens_think {self.prompt_opens_think!r} is not auto, yes or no"
            )
        if self.num_generations < 2:
            raise ShortcotError(
                "num_generations must be >= 2: group baselines need several rollouts per prompt"
            )
        if self.max_steps < 1:
            raise ShortcotError(
                f"max_steps must be >= 1 (optimizer steps), got {self.max_steps}; "
                "e.g. max_steps=450"
            )
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ShortcotError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.steps_per_generation is not None and self.steps_per_generation < 1:
            raise ShortcotError(
                f"steps_per_generation must be >= 1, got {self.steps_per_generation}"
            )
        batch = self.generation_batch_size()
        if batch % self.num_generations:
            raise ShortcotError(
                f"num_generations {self.num_generations} does not divide the {batch} completions "
                f"generated at once (per_device_train_batch_size {self.per_device_train_batch_size}"
                f" x {world_size()} process(es) x "
                f"{self.steps_per_generation or self.gradient_accumulation_steps} steps per "
                "generation); make per_device_train_batch_size a multiple of num_generations"
            )

    def generation_batch_size(self) -> int:
        """Completions generated at once (TRL's ``generation_batch_size``): whole groups of
        ``num_generations``, so it must be a multiple of it."""
        if self.trl.get("generation_batch_size"):
            return int(self.trl["generation_batch_size"])
        steps = (
            self.trl.get("steps_per_generation")
            or self.steps_per_generation
            or self.gradient_accumulation_steps
        )
        return self.per_device_train_batch_size * world_size() * int(steps)

    def to_grpo_kwargs(self) -> dict:
        """Keyword arguments for ``trl.GRPOConfig`` (output_dir is added by the caller)."""
        kw = dict(
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            num_generations=self.num_generations,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_iterations=self.num_iterations,
            max_steps=self.max_steps,
            max_completion_length=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            epsilon=self.epsilon,
            epsilon_high=self.epsilon_high,
            delta=self.delta,
            beta=self.beta,
            entropy_coef=self.entropy_coef,
            loss_type=self.loss_type,
            mask_truncated_completions=self.mask_truncated_completions,
            # group_mean = TRL's unscaled advantages; dler replaces TRL's advantages anyway
            scale_rewards="none" if self.advantage == "group_mean" else "group",
            use_vllm=self.use_vllm,
            vllm_mode=self.vllm_mode,
            vllm_gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            bf16=self.bf16,
            gradient_checkpointing=self.gradient_checkpointing,
            seed=self.seed,
            logging_steps=self.logging_steps,
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            report_to=self.report_to,
            run_name=self.run_name,
            save_strategy="steps",
        )
        if self.steps_per_generation is not None:
            kw["steps_per_generation"] = self.steps_per_generation
        kw.update(self.trl)
        return kw


# Keys that may change when a run is resumed (``--resume``): where things go, how long it
# runs, how it logs. Any other change makes the checkpoints another run's.
RESUMABLE_KEYS = (
    "out",
    "work_dir",
    "max_steps",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
    "run_name",
    "keep_checkpoints",
)


def world_size() -> int:
    """Training processes (``accelerate launch`` / torchrun set WORLD_SIZE)."""
    import os

    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


KEY_HELP = """\
config keys (YAML or key=value; nested with dots):
  model, data, out         start model (folder or Hub id), problems (.jsonl/.parquet/folder/preset/Hub id), output folder
  work_dir                 checkpoints + logs (default OUT.work); keep_checkpoints=true keeps it after success
  problem_column, answer_column, id_column, split, limit   how to read the problems (evals.data.load_problems)
  prompt_template, system_prompt                          prompt format (default: the DLER / R1 instruction)
  prompt_opens_think       auto | yes | no: the chat template opens <think> in the prompt (R1-Distill, QwQ), so a
                           completion without </think> has no answer (bad format); auto renders the template to see
  reward.method            truncation | laser | laser_d | laser_de | da_dler | l1_exact | l1_max | kimi | arora_zanette | correctness
  reward.grader            math | testbed | module:function
  reward.target_length     L_T in tokens;  reward.alpha: length-term coefficient (method default if unset)
  reward.base              auto | binary (1/0) | laser (+1/-0.5/-1)
  reward.truncated_factor  reward multiplier without EOS within L_T (paper 0, DLER code 0.1)
  reward.repetition_check  LASER-DE: no exploration bonus for repetitive responses (released code);
                           reward.repetition_ngram / reward.repetition_repeats set the n-gram detector
  reward.l1_delta          L1-Max's offset delta
  reward.target_schedule   ThinkPrune stages [[step, L_T], ...] (e.g. [[0,4096],[200,3072],[400,2048]])
  reward.da_short_target, reward.da_threshold             DA-DLER's easy-prompt target and threshold
  advantage                dler (group mean + token-weighted batch std) | grpo | group_mean
  dynamic_sampling, max_extra_rounds                      drop all-equal groups and refill, with a cap on extra rounds
  laser_d.every_steps, laser_d.monitor_data, laser_d.monitor_size, laser_d.rounding (ceil|floor), laser_d.budget_step
  lora.enabled, lora.r, lora.alpha, lora.dropout, lora.target_modules, lora.merge
  learning_rate, lr_scheduler_type, warmup_steps, weight_decay, max_grad_norm, max_steps, seed
  num_generations (G), per_device_train_batch_size (completions), gradient_accumulation_steps, steps_per_generation, num_iterations
  max_completion_length, temperature, top_p               rollout generation
  epsilon, epsilon_high, delta                            PPO clip low / high (clip-higher) and dual-clip c
  loss_type (dapo = token-mean), beta (KL), entropy_coef, mask_truncated_completions
  use_vllm, vllm_mode, vllm_gpu_memory_utilization, bf16, gradient_checkpointing
  model_dtype              weights trained in float32 (default; saved in the checkpoint's dtype) | auto | bfloat16 | float16
  logging_steps, save_steps, save_total_limit, report_to (none|tensorboard|wandb|...), run_name
  trl                      any other trl.GRPOConfig field, as a mapping
"""
