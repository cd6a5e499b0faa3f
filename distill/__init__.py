"""Compressed-CoT distillation (docs/algorithms.md §4): build datasets of short,
verified-correct reasoning chains and fine-tune on them.

- `distill.steps`: splitting a completion into its think trace and steps, losslessly.
- `distill.answers`: per-task answer detectors ("which answer does this step reach?").
- `distill.strategies`: the compression strategies as pure functions on traces
  (shortest-correct, first-correct, step-prune, any-correct).
- `distill.perplexity`: optional model-based step importance for step-prune.
- `distill.build`: the dataset CLI (``python -m distill.build``, settings in
  `distill.build_config`), three steps with plain data between them:
  `distill.teacher` samples a teacher with `evals.run`'s engine, or reads existing traces;
  `distill.compress` grades them and runs the strategies' pipeline, problem by problem;
  `distill.dataset` holds the chat-format rows, statistics and the saved folder.
- `distill.sft`: the fine-tuning CLI (``python -m distill.sft``) on TRL's SFTTrainer;
  `distill.sft_config` holds its settings (TRL's SFTConfig and ModelConfig, extended).
"""
