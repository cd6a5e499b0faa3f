"""Magnitude-selective merging (DLER, arXiv 2510.15110, section 4.6).

- `merge.select`: the exact selection math (per-tensor top-k, streaming global threshold).
- `merge.checkpoint`: lazy readers for safetensors checkpoints and PEFT LoRA adapters.
- `merge.writer`: the streaming sharded safetensors writer.
- `merge.selective`: ``python -m merge.selective`` and `merge_models(MergeConfig)`.
- `merge.mergekit_method`: the same method registered with mergekit as ``magnitude_selective``.
"""
