"""Shared helpers and fixtures of the fault-injection tests (`test_faults*.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model_dir
from safetensors.torch import load_file

from artifacts.errors import run_cli
from artifacts.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
KILL_AT = ROOT / "tests" / "kill_at.py"


# ------------------------------------------------------------------------------ helpers


def child_env(**extra) -> dict:
    paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("SHORTCOT_KILL_AT", None)
    env.update(extra)
    return env


def run_child(module: str, args: list[str], kill_at: str | None = None, **env):
    """``python -m module args`` (through kill_at.py), SIGKILLed at ``kill_at`` if given."""
    extra = {"SHORTCOT_KILL_AT": kill_at} if kill_at else {}
    return subprocess.run(
        [sys.executable, str(KILL_AT), "-m", module, *map(str, args)],
        env=child_env(**extra, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_error(code: int, err: str) -> str:
    """Exit code 2 and exactly one line on stderr, an ``error:`` line; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under ``path`` with its bytes (None when ``path`` does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def siblings(path: Path) -> list[str]:
    """Names next to ``path`` that belong to it (temporaries included)."""
    return sorted(p.name for p in path.parent.iterdir() if path.name in p.name)


def state(folder: Path) -> dict[str, torch.Tensor]:
    sd = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def same_weights(a: Path, b: Path) -> bool:
    x, y = state(a), state(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    """Progress bars write to stderr; the tests check that the error is its only line
    (a terminal user sees the bars too, above the one error line)."""
    import tqdm.std

    original = tqdm.std.tqdm.__init__

    def quiet(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.std.tqdm, "__init__", quiet)


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer):
    """Tiny base and tuned models, testbed problems, teacher traces and an SFT dataset."""
    import random

    from distill.dataset import make_row, save_rows
    from evals.prompts import build_messages
    from testbed.task import generate_split, to_record
    from testbed.teacher import teacher_completion

    root = tmp_path_factory.mktemp("faults")
    make_tiny_model_dir(root / "base", tiny_tokenizer, seed=0)
    make_tiny_model_dir(root / "tuned", tiny_tokenizer, seed=1)
    problems = generate_split("test", 6, 0, 2, 3)
    write_jsonl(root / "problems.jsonl", [to_record(p, "test", i) for i, p in enumerate(problems)])
    rng = random.Random(0)
    traces = [
        {
            "id": f"test-{i}",
            "problem": p.text,
            "reference": str(p.answer),
            "completion": teacher_completion(p, rng),
        }
        for i, p in enumerate(problems)
    ]
    write_jsonl(root / "traces.jsonl", traces)
    rows = [
        make_row(build_messages(t["problem"]), t["completion"], problem_id=t["id"],
                 answer=t["reference"], difficulty=1, original_tokens=20, compressed_tokens=10,
                 mean_sample_tokens=20.0, sample=0, strategy="first-correct", teacher="t")
        for t in traces[:2]
    ]  # fmt: skip
    (root / "sft_data").mkdir()
    save_rows(rows, root / "sft_data", "disk")
    (root / "rl.yaml").write_text(
        f"model_name_or_path: {root / 'base'}\ndata: {root / 'problems.jsonl'}\n"
        "reward_method: truncation\ngrader: testbed\ntarget_length: 8\n"
        "num_generations: 2\nper_device_train_batch_size: 4\nmax_completion_length: 8\n"
        "max_steps: 2\nsave_steps: 1\ndynamic_sampling: false\nlearning_rate: 0.001\n"
    )
    (root / "not_yaml.yaml").write_text("model: [unclosed\n  : : :\n")
    (root / "binary.yaml").write_bytes(b"\x80\x81\xfe\xff\x00 not text")
    (root / "empty_model").mkdir()
    (root / "not_callable.py").write_text("grade = 42\n")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


class Mounts:
    """Small tmpfs folders (real ENOSPC / EROFS), where this machine allows mounting."""

    def __init__(self, root: Path):
        self.root, self.points = root, []

    @staticmethod
    def available() -> bool:
        return (
            sys.platform.startswith("linux") and os.geteuid() == 0 and bool(shutil.which("mount"))
        )

    def mount(self, name: str, size: str, read_only: bool = False) -> Path:
        point = self.root / name
        point.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        self.points.append(point)
        return point

    def resize(self, point: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)

    def close(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def mounts(tmp_path):
    if not Mounts.available():
        pytest.skip("mounting a tmpfs needs root on Linux")
    m = Mounts(tmp_path / "mnt")
    yield m
    m.close()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written into: a read-only tmpfs (root) or mode 0555."""
    if Mounts.available():
        m = Mounts(tmp_path / "mnt")
        yield m.mount("ro", "1m", read_only=True)
        m.close()
        return
    if os.geteuid() == 0:
        pytest.skip("root ignores file modes and cannot mount here")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture(scope="module")
def eval_ref(assets):
    """An uninterrupted evaluation (the reference of the resume tests)."""
    from evals import run as evals_run

    out = assets / "eval_ref"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evals_run.main, [str(x) for x in _eval_args(assets, out)])
    assert exit_info.value.code == 0
    return out


def _eval_args(a: Path, out: Path, model: Path | None = None, *extra) -> list:
    return ["--model", model or a / "base", "--data", a / "problems.jsonl", "--out", out,
            "--grader", "testbed", "--samples", "3", "--max-new-tokens", "12",
            "--batch-size", "4", "--no-progress", *extra]  # fmt: skip


def _records(folder: Path) -> dict:
    recs = {(r["id"], r["sample"]): r for r in read_jsonl(folder / "samples.jsonl")}
    for r in recs.values():
        r.pop("gen_seconds")
    return recs
