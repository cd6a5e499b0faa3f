"""The magnitude-selective merge as a mergekit (0.1.5) merge method, usable by name.

Importing this module registers ``magnitude_selective`` in
``mergekit.merge_methods.registry`` (mergekit has no plugin discovery, so the
registration happens in the importing process). A mergekit YAML then reads::

    merge_method: magnitude_selective
    base_model: path/or/hub-id-of-base
    models:
      - model: path/or/hub-id-of-tuned
    parameters:
      density: 0.25   # fraction of |tuned - base| kept, per tensor
      scale: 0.7      # factor on the kept delta
    dtype: float32

and runs with ``python -m merge.mergekit_method recipe.yaml OUT [mergekit-yaml options]``
(mergekit's own ``mergekit-yaml`` CLI, with the method registered first), or in Python
with ``import merge.mergekit_method`` before ``mergekit.merge.run_merge``.

The kernel is the per-tensor scope of `merge.selective` (same exact top-k and tie rule);
mergekit loads and writes the tensors. For big models prefer ``python -m
merge.selective``, which streams and is several times faster (see benchmarks/).
"""

from __future__ import annotations

import sys

import torch
from mergekit.merge_methods import BasePolicy, InputContract, TensorGroup, merge_method, registry

from merge.select import keep_count, merge_tensor, topk_mask

NAME = "magnitude_selective"


def _kernel(group: TensorGroup, density: float = 0.25, scale: float = 0.7) -> torch.Tensor:
    """``base + scale * (delta * top_density(|delta|))`` for one tensor (DLER section 4.6)."""
    if not 0 < density <= 1:
        raise ValueError(f"density {density} is outside (0, 1]")
    base = group.base.tensor
    delta = group.non_base[0].tensor.float() - base.float()
    mask = topk_mask(delta, keep_count(delta.numel(), density))
    return merge_tensor(base, delta, mask, scale).to(base.dtype)


magnitude_selective = merge_method(
    _kernel,
    name=NAME,
    pretty_name="Magnitude-selective merge (DLER)",
    reference_url="https://arxiv.org/abs/2510.15110",
    contract=InputContract(base=BasePolicy.REQUIRED, min_non_base=1, max_non_base=1),
)


def register() -> None:
    """Register the method with mergekit once (importing this module does it)."""
    if NAME not in {m.spec.name for m in registry.registered_methods()}:
        registry.register(magnitude_selective)


register()


def main(argv: list[str] | None = None) -> None:
    """``mergekit-yaml`` with ``magnitude_selective`` available."""
    from mergekit.scripts.run_yaml import main as run_yaml

    run_yaml.main(
        args=list(sys.argv[1:] if argv is None else argv),
        prog_name="python -m merge.mergekit_method",
    )


if __name__ == "__main__":
    main()
