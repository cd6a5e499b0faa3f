"""Compressed-CoT distillation (docs/algorithms.md §4): build datasets of short,
verified-correct reasoning chains and fine-tune on them.

- `distill.steps`: splitting a completion into its think trace and steps, losslessly.
- `distill.answers`: per-task answer detectors ("which answer does this step reach?").
- `distill.strategies`: the compression strategies as pure functions on traces
  (shortest-correct, first-correct, step-prune, any-correct) and their pipeline.
- `distill.perplexity`: optional model-based step importance for step-prune.
- `distill.teacher`: sampling a teacher with `evals.run`'s engine, or reading existing traces.
- `distill.dataset`: the chat-format rows, statistics and saving.
- `distill.build` / `distill.sft`: the two CLIs (``python -m distill.build``,
  ``python -m distill.sft``); `distill.sft_config` is the SFT recipe schema.
"""
