"""Evaluation: accuracy against tokens, the way the concise-reasoning papers report it.

- `evals.grading`: the grader and the answer contract shared with RL rewards and dataset
  building (contract 1)
- `evals.prompts`: the prompt template and chat messages
- `evals.backends`: HF / vLLM generation with per-sample seeds (contract 2): the interface
  (`evals.generation`), the backends (`evals.hf_backend`, `evals.vllm_backend`) and the
  engine settings shared with ``distill.build`` (`evals.engine.EngineOptions`)
- `evals.data`: problems from local files or benchmark presets (contract 3)
- `evals.metrics`: pass@1 and its s.e., token statistics, majority vote (pure functions)
- `evals.budget`: budget forcing (s1), the inference-time length-control baseline
- `evals.run`: ``python -m evals.run`` and `evals.run.evaluate` (contract 4), with its
  settings (`evals.config.EvalConfig`), output folder and resume (`evals.run_folder`) and
  records and summary (`evals.records`)
- `evals.compare`: ``python -m evals.compare``: side-by-side table and Pareto plot
"""
