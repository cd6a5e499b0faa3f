"""Lazy readers for the two inputs of a merge: a safetensors checkpoint folder (single
file or sharded with an index) and a PEFT LoRA adapter on top of a base checkpoint.

Why not ``safetensors.safe_open``: it memory-maps whole shards, and every page a read
touches stays in the process's resident set until the file is closed, so reading a
checkpoint once costs its full size in RSS (this is most of mergekit's peak memory).
Here the safetensors header (8-byte length + JSON) is parsed directly and each tensor is
read with ``os.preadv`` into a buffer (a fresh one, or one the merge reuses), so memory
holds only the tensors in use, and reads release the GIL (the merge overlaps them with
compute).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from artifacts.errors import ShortcotError

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# Output embeddings that a config may tie to the input embeddings, and the names the
# input embeddings go by (Llama/Qwen/Mistral, GPT-2, GPT-NeoX, BLOOM, OPT).
OUTPUT_EMBEDDINGS = ("lm_head.weight", "embed_out.weight")
INPUT_EMBEDDINGS = (
    "embed_tokens.weight",
    "wte.weight",
    "embed_in.weight",
    "word_embeddings.weight",
)

CONVERT_HINT = (
    'convert it to safetensors first, e.g. python -c "from transformers import '
    "AutoModelForCausalLM as M; M.from_pretrained('IN').save_pretrained('OUT')\""
)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, absolute byte range, dtype and shape."""

    file: Path
    start: int
    end: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_safetensors_header(path: Path) -> tuple[dict, dict[str, TensorInfo]]:
    """Parse a safetensors file's header: ``(metadata, {name: TensorInfo})``."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        raise ShortcotError(
            f"{path} is not a readable safetensors file ({err}); re-download or re-save it"
        ) from err
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    infos = {}
    for name, h in header.items():
        if h["dtype"] not in DTYPES:
            raise ShortcotError(
                f"{path}: tensor {name} has unsupported dtype {h['dtype']}; re-save it in bf16/fp16/fp32"
            )
        s, e = h["data_offsets"]
        infos[name] = TensorInfo(path, base + s, base + e, DTYPES[h["dtype"]], tuple(h["shape"]))
    return meta, infos


def _pread(path: Path, offset: int, buf: torch.Tensor) -> None:
    """Fill the uint8 tensor ``buf`` with the bytes of ``path`` from ``offset`` on."""
    nbytes = buf.numel()
    if not nbytes:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        view = memoryview(buf.numpy())
        got = 0
        while got < nbytes:  # preadv may return short reads on some filesystems
            n = os.preadv(fd, [view[got:]], offset + got)
            if n <= 0:
                raise ShortcotError(f"{path} is truncated; re-download it")
            got += n
    finally:
        os.close(fd)


def read_tensor(info: TensorInfo, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor from disk into its own (writable) buffer, or into ``buffer`` (flat
    uint8, reused by the caller) when it is large enough."""
    nbytes = info.end - info.start
    if buffer is not None and buffer.numel() >= nbytes:
        buf = buffer[:nbytes]
    else:
        buf = torch.empty(nbytes, dtype=torch.uint8)
    _pread(info.file, info.start, buf)
    return buf.view(info.dtype).reshape(info.shape)


def read_entries(info: TensorInfo, first: int, last: int, buffer: torch.Tensor) -> torch.Tensor:
    """Flat entries ``[first, last)`` of a tensor, read into the start of ``buffer`` (flat
    uint8, at least ``(last - first) * itemsize`` bytes): a chunk of a large tensor without
    reading the rest."""
    size = torch.empty((), dtype=info.dtype).element_size()
    buf = buffer[: (last - first) * size]
    _pread(info.file, info.start + first * size, buf)
    return buf.view(info.dtype)


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ShortcotError(f"cannot read {path} ({err}); check the model folder") from err


def ties_embeddings(config: dict) -> bool:
    """Whether a config ties output to input embeddings (transformers' default is True)."""
    return bool(config.get("tie_word_embeddings", True))


def input_embedding_name(infos: dict[str, TensorInfo], shape: tuple[int, ...]) -> str | None:
    for name, info in infos.items():
        if name.endswith(INPUT_EMBEDDINGS) and info.shape == shape:
            return name
    return None


class Checkpoint:
    """A model folder with config.json and safetensors weights, read lazily.

    ``tensors`` maps every stored tensor name to its `TensorInfo`; ``files`` lists the
    weight files.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.config = (
            load_json(self.folder / "config.json")
            if (self.folder / "config.json").exists()
            else None
        )
        if self.config is None:
            raise ShortcotError(
                f"{self.folder} has no config.json; pass a Hugging Face model folder"
            )
        index = self.folder / "model.safetensors.index.json"
        if index.exists():
            weight_map = load_json(index).get("weight_map", {})
            self.files = sorted({self.folder / f for f in weight_map.values()})
        elif (self.folder / "model.safetensors").exists():
            self.files = [self.folder / "model.safetensors"]
        else:
            self.files = sorted(
                p for p in self.folder.glob("*.safetensors") if not p.name.startswith("adapter")
            )
        if not self.files:
            bins = [p.name for p in self.folder.glob("*.bin")] + [
                p.name for p in self.folder.glob("*.pt")
            ]
            if bins:
                raise ShortcotError(
                    f"{self.folder} holds a PyTorch pickle checkpoint ({bins[0]}), not safetensors; {CONVERT_HINT}"
                )
            raise ShortcotError(f"{self.folder} has no *.safetensors weights; pass a model folder")
        for f in self.files:
            if not f.exists():
                raise ShortcotError(
                    f"{f} is listed in the index but missing; re-download the model"
                )
        self.tensors: dict[str, TensorInfo] = {}
        for f in self.files:
            _, infos = read_safetensors_header(f)
            self.tensors.update(infos)

    def read(self, name: str) -> torch.Tensor:
        return read_tensor(self.tensors[name])


class CheckpointDeltas:
    """The tuned side of a merge when it is a full checkpoint: ``delta = tuned - base``."""

    kind = "checkpoint"

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self.config = ckpt.config
        self.folder = ckpt.folder
        self.tensors = ckpt.tensors

    def read_tuned(self, name: str) -> torch.Tensor:
        return self.ckpt.read(name)


@dataclass
class LoraModule:
    a: TensorInfo
    b: TensorInfo
    scaling: float
    transposed: bool  # the weight is (B @ A).T: an embedding, or a Conv1D (fan_in_fan_out)


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module by regex suffix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _unsupported_hint(name: str) -> str:
    """What a tensor of an adapter that is not LoRA's A, B or a saved module is."""
    if "trainable_tokens" in name:
        return " (peft trainable_token_indices: new rows of the embedding, not a LoRA delta)"
    return ""


def check_lora_shapes(name: str, mod: LoraModule, base_shape: tuple[int, ...], folder) -> None:
    """The adapter's A and B must multiply to the base tensor's shape (B @ A for a linear
    layer, (B @ A).T for an embedding or a Conv1D layer); otherwise it was made for another
    base."""
    a, b = mod.a.shape, mod.b.shape
    # lora_embedding_A: (r, num_embeddings), lora_embedding_B: (dim, r); a Conv1D weight
    # is stored (in_features, out_features)
    if mod.transposed:
        ok = len(a) == len(b) == 2 and a[0] == b[1] and (a[1], b[0]) == tuple(base_shape)
    else:  # lora_A: (r, in_features), lora_B: (out_features, r)
        ok = len(a) == len(b) == 2 and a[0] == b[1] and (b[0], a[1]) == tuple(base_shape)
    if not ok:
        raise ShortcotError(
            f"{folder}: adapter module {name} has lora_A {list(a)} and lora_B {list(b)}, which "
            f"do not fit the base's tensor of shape {list(base_shape)}; the adapter was made "
            "for another base model, pass the base it was trained on"
        )


class LoraDeltas:
    """The tuned side of a merge when it is a PEFT LoRA adapter trained on the base.

    The tuned weight of an adapted module is ``W_base + scaling * B @ A`` (PEFT
    ``LoraLayer.get_delta_weight``; embeddings store A and B transposed, and Conv1D layers
    (``fan_in_fan_out``) their weight, so their delta is ``scaling * (B @ A).T``), with
    ``scaling = lora_alpha / r`` or ``lora_alpha / sqrt(r)`` under rsLoRA, honouring
    ``rank_pattern`` and ``alpha_pattern``. The delta is computed from the adapter
    directly, without writing a merged copy. ``modules_to_save`` tensors (and saved
    embedding layers) are full tuned values. In a base with tied embeddings, an adapter
    that changes one of them unties them (`_untie_output_embedding`). DoRA, LoRA biases,
    trainable tokens and other adapter types are refused with an error (their delta is
    not B @ A). tests/test_merge_lora.py checks all this against peft.
    """

    kind = "lora"

    def __init__(self, folder: Path, base: Checkpoint):
        self.folder = Path(folder)
        cfg = load_json(self.folder / "adapter_config.json")
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ShortcotError(
                f"{folder} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be merged, merge it with peft first"
            )
        if cfg.get("use_dora"):
            raise ShortcotError(
                f"{folder} is a DoRA adapter; merge it with peft (merge_and_unload) and pass the merged folder"
            )
        weights = self.folder / "adapter_model.safetensors"
        if not weights.exists():
            if (self.folder / "adapter_model.bin").exists():
                raise ShortcotError(
                    f"{folder} stores the adapter as adapter_model.bin; re-save it with save_pretrained(safe_serialization=True)"
                )
            raise ShortcotError(
                f"{folder} has adapter_config.json but no adapter_model.safetensors"
            )
        self.adapter_config = cfg
        self.base = base
        self.config = base.config
        _, infos = read_safetensors_header(weights)
        r, alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
        rslora = bool(cfg.get("use_rslora", False))
        fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.modules: dict[str, LoraModule] = {}
        self.full: dict[str, TensorInfo] = {}
        parts: dict[str, dict[str, TensorInfo]] = {}
        for key, info in infos.items():
            name = key.removeprefix("base_model.model.")
            m = re.match(r"(.+)\.(lora_A|lora_B)(\.[^.]+)?\.weight$", name) or re.match(
                r"(.+)\.(lora_embedding_A|lora_embedding_B)(\.[^.]+)?$", name
            )
            if m:
                parts.setdefault(m.group(1), {})[m.group(2)] = info
                continue
            name = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
            if name.endswith(".bias") and ".lora_" in name:
                raise ShortcotError(
                    f"{folder} trains LoRA biases (lora_bias); merge it with peft first"
                )
            self.full[name] = info
        for module, p in parts.items():
            emb = "lora_embedding_A" in p
            a, b = (
                (p.get("lora_embedding_A"), p.get("lora_embedding_B"))
                if emb
                else (p.get("lora_A"), p.get("lora_B"))
            )
            if a is None or b is None:
                raise ShortcotError(
                    f"{folder}: module {module} has only one of lora_A/lora_B; the adapter is incomplete"
                )
            rank = _pattern_value(cfg.get("rank_pattern") or {}, module, r)
            alph = _pattern_value(cfg.get("alpha_pattern") or {}, module, alpha)
            scaling = alph / (rank**0.5) if rslora else alph / rank
            # fan_in_fan_out: the layer (GPT-2's Conv1D) stores its weight transposed, so
            # peft transposes the delta (get_delta_weight); embeddings always are
            self.modules[module + ".weight"] = LoraModule(a, b, scaling, emb or fan_in_fan_out)
        self.tensors = dict(base.tensors)
        for name, info in self.full.items():
            if name not in base.tensors and not name.endswith(OUTPUT_EMBEDDINGS):
                raise ShortcotError(
                    f"{folder}: adapter tensor {name} is neither a LoRA weight nor a tensor of "
                    f"the base model{_unsupported_hint(name)}; merge it with peft "
                    "(merge_and_unload) and pass the merged folder, or pass the base it was "
                    "trained on"
                )
            self.tensors[name] = info
        self._untie_output_embedding(base)
        for name, mod in self.modules.items():
            if name not in self.tensors:
                raise ShortcotError(
                    f"adapter module {name} is not a tensor of the base model; pass the base the adapter was trained on"
                )
            check_lora_shapes(name, mod, self.tensors[name].shape, folder)

    def _untie_output_embedding(self, base: Checkpoint) -> None:
        """In a base that ties its output embedding to its input embedding (stored once), an
        adapter that changes either of them trains them apart: the other keeps the base's
        value during training (peft adds the change to the shared weight when it merges, so
        its merged model is not the adapted one). The output embedding is then a tuned
        tensor of its own, starting from the base's input embedding; the plan merges it
        against that and writes the output untied."""
        if not ties_embeddings(base.config) or any(
            n.endswith(OUTPUT_EMBEDDINGS) for n in base.tensors
        ):
            return
        inp = next((n for n in base.tensors if n.endswith(INPUT_EMBEDDINGS)), None)
        changed = set(self.modules) | set(self.full)
        out = next((n for n in sorted(changed) if n.endswith(OUTPUT_EMBEDDINGS)), None)
        if inp is None or (out is None and inp not in changed):
            return
        out = out or OUTPUT_EMBEDDINGS[0]
        self.full.setdefault(out, base.tensors[inp])
        self.tensors[out] = self.full[out]

    def lora_delta(self, name: str) -> torch.Tensor | None:
        """``scaling * B @ A`` in float32 for an adapted tensor, else None."""
        mod = self.modules.get(name)
        if mod is None:
            return None
        a = read_tensor(mod.a).float()
        b = read_tensor(mod.b).float()
        d = (b @ a) * mod.scaling
        return d.T if mod.transposed else d

    def read_tuned(self, name: str) -> torch.Tensor:
        """The tuned tensor without the LoRA delta (the full tuned value for
        modules_to_save, else the base value)."""
        if name in self.full:
            return read_tensor(self.full[name])
        return self.base.read(name)


def open_tuned(folder: Path, base: Checkpoint) -> CheckpointDeltas | LoraDeltas:
    """A full checkpoint or, when the folder holds adapter_config.json, a LoRA adapter."""
    if (Path(folder) / "adapter_config.json").exists():
        return LoraDeltas(folder, base)
    return CheckpointDeltas(Checkpoint(folder))
