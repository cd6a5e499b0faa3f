"""Magnitude-selective merging (DLER, arXiv 2510.15110, section 4.6).

- `merge.select`: the exact selection math (per-tensor top-k, streaming global threshold).
- `merge.checkpoint`: lazy readers for safetensors checkpoints and PEFT LoRA adapters.
- `merge.config`: `MergeConfig`, the settings of one merge (its CLI flags), and their checks.
- `merge.plan`: the inputs resolved and checked, one job per output tensor (`plan_merge`).
- `merge.engine`: the streaming tensor-scope and global-scope merge of a plan.
- `merge.writer`: the streaming sharded safetensors writer.
- `merge.record`: merge_record.json, the model card and the equivalent mergekit recipe.
- `merge.selective`: ``python -m merge.selective`` and `merge_models(MergeConfig)`.
- `merge.sweep`: ``python -m merge.sweep``, density x scale chosen by evaluation.
- `merge.mergekit_method`: the same method registered with mergekit as ``magnitude_selective``.
"""
