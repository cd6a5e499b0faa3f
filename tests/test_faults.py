"""Fault injection: the README's promise ("Errors, outputs, resuming") under hostile use.

Every fault must end in exit code 2 with exactly one ``error: ...`` line on stderr and the
output path untouched, and a rerun once the fault is gone must finish with the same result
as an uninterrupted run. Faults: read-only and full disks (a real tmpfs where this machine
lets the tests mount one, and patched writers everywhere), SIGKILL at chosen points
(`tests/kill_at.py`), malformed configs and arguments, adapters for another base, hostile
answers for the grader. The pipeline's resume of killed training stages is in
`test_faults_pipeline.py`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model_dir
from safetensors.torch import load_file

from artifacts.errors import environment_error, run_cli
from artifacts.jsonl import read_jsonl, write_jsonl
from artifacts.outdir import OWNER_FILE, atomic_output_dir, owner_record, remove_stale_temporaries

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


# ------------------------------------------------------ one line instead of a traceback


def _command(name: str, a: Path, out: Path) -> tuple:
    """(main, argv) of each command writing to ``out``, with otherwise valid inputs."""
    from distill import build as distill_build
    from distill import sft
    from evals import compare
    from evals import run as evals_run
    from merge import selective, sweep
    from pipeline import __main__ as pipeline
    from testbed import build as testbed_build
    from train import rl

    problems = a / "problems.jsonl"
    return {
        "merge.selective": (selective.main, ["--base", a / "base", "--tuned", a / "tuned",
                                             "--out", out]),
        "merge.sweep": (sweep.main, ["--base", a / "base", "--tuned", a / "tuned", "--data",
                                     problems, "--out", out]),
        "distill.build": (distill_build.main, ["--teacher", a / "traces.jsonl", "--out", out,
                                               "--grader", "testbed"]),
        "distill.sft": (sft.main, ["--student", a / "base", "--data", a / "sft_data", "--out",
                                   out]),
        "train.rl": (rl.main, ["--config", a / "rl.yaml", "--out", out]),
        "testbed.build": (testbed_build.main, ["--out", out, "--preset", "tiny",
                                               "--no-progress"]),
        "evals.run": (evals_run.main, ["--model", a / "base", "--data", problems, "--out", out,
                                       "--grader", "testbed", "--no-progress"]),
        "evals.compare": (compare.main, ["--dirs", a / "eval_ref", "--out", out]),
        "pipeline": (pipeline.main, ["run", f"workdir={out}", f"base_model={a / 'base'}",
                                     f"train_data={problems}", f"test_data={problems}"]),
    }[name]  # fmt: skip


COMMANDS = [
    "merge.selective",
    "merge.sweep",
    "distill.build",
    "distill.sft",
    "train.rl",
    "testbed.build",
    "evals.run",
    "evals.compare",
    "pipeline",
]


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


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output_folder_is_one_line(command, assets, eval_ref, read_only_dir, capsys):
    out = read_only_dir / "sub" / "out"
    main, argv = _command(command, assets, out)
    line = one_error(*run_main(main, argv, capsys)[::2])
    assert "read-only" in line or "not writable" in line, line
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize(
    "case",
    [
        "config_not_yaml",
        "config_binary",
        "config_folder",
        "override_not_yaml",
        "num_generations",
        "max_steps",
        "resume_nothing",
        "grader_not_callable",
        "empty_model",
    ],
)
def test_train_rl_refuses_bad_settings_before_loading_the_model(
    case, assets, tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForCausalLM

    from train import rl

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_model)
    out = tmp_path / "out"
    argv = ["--config", assets / "rl.yaml", "--out", out]
    expect = {
        "config_not_yaml": ("not valid YAML", {"--config": assets / "not_yaml.yaml"}),
        "config_binary": ("not a text file", {"--config": assets / "binary.yaml"}),
        "config_folder": ("is a folder", {"--config": assets}),
        "override_not_yaml": ("invalid float value", ["--learning_rate", "[1,"]),
        "num_generations": ("does not divide", ["--num_generations", "3"]),
        "max_steps": ("max_steps must be >= 1", ["--max_steps", "-5"]),
        "resume_nothing": ("holds no checkpoint", ["--resume"]),
        "grader_not_callable": ("not a function", ["--grader", "not_callable:grade"]),
        "empty_model": ("is empty", ["--model", assets / "empty_model"]),
    }[case]
    message, change = expect
    if isinstance(change, dict):
        argv[1] = change["--config"]
    else:
        argv += change
    line = one_error(*run_main(rl.main, argv, capsys)[::2])
    assert message in line, line
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("case", ["max_steps", "resume_nothing", "config_not_yaml", "empty"])
def test_distill_sft_refuses_bad_settings(case, assets, tmp_path, capsys):
    from distill import sft

    out = tmp_path / "out"
    argv = ["--student", assets / "base", "--data", assets / "sft_data", "--out", out]
    argv += {
        "max_steps": ["--max-steps", "-5"],
        "resume_nothing": ["--resume"],
        "config_not_yaml": ["--config", assets / "not_yaml.yaml"],
        "empty": ["--student", assets / "empty_model"],
    }[case]
    line = one_error(*run_main(sft.main, argv, capsys)[::2])
    assert {
        "max_steps": "max_steps must be -1",
        "resume_nothing": "holds no checkpoint",
        "config_not_yaml": "not valid YAML",
        "empty": "is empty",
    }[case] in line
    assert not out.exists() and siblings(out) == []


@pytest.mark.parametrize("case", ["not_callable", "config_not_yaml", "config_wrong_type"])
def test_evals_and_distill_build_refuse_before_generating(
    case, assets, tmp_path, capsys, monkeypatch
):
    import evals.backends
    from distill import build as distill_build
    from evals import run as evals_run

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(evals.backends, "load_backend", no_model)
    monkeypatch.setattr(evals_run, "load_backend", no_model)
    (tmp_path / "wrong_type.yaml").write_text("limit: many\n")  # a key no flag overrides
    out = tmp_path / "out"
    change = {
        "not_callable": ["--grader", "not_callable:grade"],
        "config_not_yaml": ["--config", assets / "not_yaml.yaml"],
        "config_wrong_type": ["--config", tmp_path / "wrong_type.yaml"],
    }[case]
    line = one_error(*run_main(evals_run.main, [*_eval_args(assets, out), *change], capsys)[::2])
    expected = {
        "not_callable": "not a function",
        "config_not_yaml": "not valid YAML",
        "config_wrong_type": "invalid int value: 'many'",
    }[case]
    assert expected in line, line
    assert not out.exists()
    if case != "config_wrong_type":
        argv = ["--teacher", assets / "base", "--data", assets / "problems.jsonl", "--out", out]
        code, _, err = run_main(distill_build.main, [*argv, *change], capsys)
        assert expected in one_error(code, err)
        assert not out.exists() and not (tmp_path / "out.work").exists()


def test_pipeline_config_not_yaml(assets, tmp_path, capsys):
    from pipeline import __main__ as pipeline

    line = one_error(
        *run_main(
            pipeline.main,
            ["run", "--config", assets / "binary.yaml", f"workdir={tmp_path}"],
            capsys,
        )[::2]
    )
    assert "not a text file" in line


def _lora_for_other_base(root: Path, tokenizer) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    make_tiny_model_dir(root / "wide", tokenizer, hidden_size=48)
    model = AutoModelForCausalLM.from_pretrained(root / "wide", dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    peft.save_pretrained(root / "lora_wide")
    return root / "lora_wide"


@pytest.mark.parametrize("dry_run", [True, False])
def test_merge_lora_made_for_another_base(dry_run, assets, tiny_tokenizer, tmp_path, capsys):
    from merge import selective

    adapter = _lora_for_other_base(tmp_path, tiny_tokenizer)
    out = tmp_path / "out"
    argv = ["--base", assets / "base", "--tuned", adapter, "--out", out]
    line = one_error(
        *run_main(selective.main, argv + (["--dry-run"] if dry_run else []), capsys)[::2]
    )
    assert "another base" in line and "q_proj" in line, line
    assert not out.exists() and siblings(out) == []


def test_empty_folder_as_model_everywhere(assets, tmp_path, capsys):
    from evals import run as evals_run
    from merge import selective

    empty = assets / "empty_model"
    for main, argv in (
        (evals_run.main, _eval_args(assets, tmp_path / "e", empty)),
        (selective.main, ["--base", empty, "--tuned", assets / "tuned", "--out", tmp_path / "m"]),
    ):
        assert "is empty" in one_error(*run_main(main, argv, capsys)[::2])
    assert sorted(os.listdir(tmp_path)) == []


# ------------------------------------------------------------------------ evals.run


def test_mistyped_model_then_corrected_rerun(assets, eval_ref, tmp_path, capsys):
    from evals import run as evals_run

    out = tmp_path / "out"
    line = one_error(
        *run_main(evals_run.main, _eval_args(assets, out, assets / "bsae"), capsys)[::2]
    )
    assert "does not exist" in line
    assert not out.exists()  # no settings written before the model loaded
    out.mkdir()  # even a folder left with stale settings and no samples does not bind
    (out / "settings.json").write_text(json.dumps({"generation": {"model": "typo"}}))
    code, _, err = run_main(evals_run.main, _eval_args(assets, out), capsys)
    assert code == 0, err
    assert _records(out) == _records(eval_ref)


def test_forced_evaluation_keeps_old_results_until_it_succeeds(assets, eval_ref, tmp_path, capsys):
    """--force with other settings, killed twice (mid-generation, and just before the
    swap), then rerun: the old output is byte-identical until the new run completes, and
    the final folder equals an uninterrupted run with the new settings."""
    from evals import run as evals_run

    out = tmp_path / "out"
    shutil.copytree(eval_ref, out)
    old = snapshot(out)
    new_args = _eval_args(assets, out, None, "--seed", "1", "--force")
    # a grader that cannot work fails before anything is touched
    code, _, err = run_main(evals_run.main, [*new_args, "--grader", "not_callable:grade"], capsys)
    one_error(code, err)
    assert snapshot(out) == old and siblings(out) == ["out"]
    # killed after 5 samples of the forced run, then killed just before the swap
    proc = run_child("evals.run", new_args, "artifacts.jsonl:JsonlAppender.write:6")
    assert proc.returncode == -9, proc.stderr
    assert snapshot(out) == old and (tmp_path / ".out.new" / "samples.jsonl").exists()
    proc = run_child("evals.run", new_args, "artifacts.outdir:move_into_place:1")
    assert proc.returncode == -9, proc.stderr
    assert snapshot(out) == old
    code, _, err = run_main(evals_run.main, new_args, capsys)
    assert code == 0, err
    reference = tmp_path / "reference"
    assert (
        run_main(evals_run.main, _eval_args(assets, reference, None, "--seed", "1"), capsys)[0] == 0
    )
    assert _records(out) == _records(reference) and _records(out) != _records(eval_ref)
    assert siblings(out) == ["out"]


def test_full_disk_during_evaluation_then_resume(assets, eval_ref, mounts, capsys):
    from evals import run as evals_run

    disk = mounts.mount("small", "8k")
    out = disk / "out"
    line = one_error(*run_main(evals_run.main, _eval_args(assets, out), capsys)[::2])
    assert "no space left" in line, line
    assert 0 < len(list(read_jsonl(out / "samples.jsonl"))) < 18  # part of the run was kept
    assert [p.name for p in disk.iterdir() if p.name != "out"] == []  # no temporary files
    mounts.resize(disk, "4m")
    code, _, err = run_main(evals_run.main, _eval_args(assets, out), capsys)
    assert code == 0, err
    assert _records(out) == _records(eval_ref)


# ------------------------------------------------------------------ merge, testbed, build


@pytest.fixture(scope="module")
def merge_ref(assets):
    from merge.selective import MergeConfig, merge_models

    out = assets / "merge_ref"
    merge_models(MergeConfig(base=str(assets / "base"), tuned=str(assets / "tuned"), out=str(out)))
    return out


def _merge_args(a: Path, out: Path) -> list:
    return ["--base", a / "base", "--tuned", a / "tuned", "--out", out]


@pytest.mark.parametrize("tensor", [1, 7])
def test_merge_killed_midway_leaves_a_temporary_the_rerun_removes(
    tensor, assets, merge_ref, tmp_path, capsys
):
    from merge import selective

    out = tmp_path / "out"
    proc = run_child(
        "merge.selective", _merge_args(assets, out), f"merge.writer:ShardedWriter.write:{tensor}"
    )
    assert proc.returncode == -9, proc.stderr
    (stale,) = tmp_path.glob(".out.tmp-*")
    assert json.loads((stale / OWNER_FILE).read_text())["pid"] != os.getpid()
    assert not out.exists()
    code, stdout, err = run_main(selective.main, _merge_args(assets, out), capsys)
    assert code == 0, err
    assert "removed 1 temporary folder" in stdout
    assert siblings(out) == ["out"] and same_weights(out, merge_ref)


def test_only_provably_dead_temporaries_are_removed(tmp_path):
    out = tmp_path / "out"

    def temp(name: str, owner: dict | None) -> Path:
        folder = tmp_path / f".out.tmp-{name}"
        folder.mkdir()
        (folder / "shard").write_bytes(b"x" * 10)
        if owner is not None:
            (folder / OWNER_FILE).write_text(json.dumps(owner))
        return folder

    me = owner_record()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is certainly not alive now (or reused: start time differs)
    dead = temp("dead", {**me, "pid": child.pid, "start": "0"})
    rebooted = temp("boot", {**me, "pid": 1, "boot_id": "another-boot"})
    alive = temp("alive", me)  # this very process
    init = temp("init", {**me, "pid": 1, "start": _start_of(1)})  # alive: init
    remote = temp("remote", {**me, "host": "another-host", "pid": child.pid})
    unmarked = temp("unmarked", None)
    other_output = tmp_path / ".outer.tmp-x"
    other_output.mkdir()
    (other_output / OWNER_FILE).write_text(json.dumps({**me, "pid": child.pid}))
    removed = remove_stale_temporaries(out)
    assert sorted(removed) == sorted([dead, rebooted])
    for kept in (alive, init, remote, unmarked, other_output):
        assert kept.exists()


def _start_of(pid: int) -> str | None:
    from artifacts.outdir import _start_time

    return _start_time(pid)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_force_keeps_old_output_when_the_new_one_fails(exchange, tmp_path, monkeypatch):
    import artifacts.outdir

    if not exchange:
        monkeypatch.setattr(artifacts.outdir, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("half")
        assert (out / "old.txt").exists()
        raise RuntimeError("the new run fails")
    assert snapshot(out) == {"old.txt": b"old"} and siblings(out) == ["out"]
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # still there until the new one is complete
    assert snapshot(out) == {"new.txt": b"new"} and siblings(out) == ["out"]


def test_full_disk_in_the_merge_writer(assets, merge_ref, mounts, tmp_path, capsys, monkeypatch):
    """A real ENOSPC from a small tmpfs, then the same merge after space is freed."""
    from functools import partial

    import merge.selective as selective

    monkeypatch.setattr("merge.plan.check_free_space", lambda *a: None)  # let it hit the wall
    monkeypatch.setattr(selective, "tqdm", partial(selective.tqdm, disable=True))
    disk = mounts.mount("small", "64k")
    out = disk / "out"
    line = one_error(*run_main(selective.main, _merge_args(assets, out), capsys)[::2])
    assert "no space left" in line.lower(), line
    assert list(disk.iterdir()) == []
    mounts.resize(disk, "8m")
    code, _, err = run_main(selective.main, _merge_args(assets, out), capsys)
    assert code == 0, err
    assert same_weights(out, merge_ref) and siblings(out) == ["out"]


@pytest.mark.parametrize(
    "command, target, error",
    [
        ("merge.selective", "merge.writer.open", OSError(errno.ENOSPC, "No space left on device")),
        (
            "testbed.build",
            "testbed.model.save_checkpoint",
            RuntimeError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
        ),
        (
            "distill.build",
            "distill.dataset.save_rows",
            OSError(errno.EDQUOT, "Disk quota exceeded", "data-00000.arrow"),
        ),
        ("evals.compare", "evals.compare.atomic_write_text", OSError(errno.EROFS, "Read-only")),
    ],
)
def test_patched_writer_full_disk(
    command, target, error, assets, eval_ref, tmp_path, capsys, monkeypatch
):
    """The same promise where no tmpfs can be mounted: writers that fail like a full disk."""

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(target, failing, raising=False)
    if command == "merge.selective":
        from functools import partial

        import merge.selective as selective

        monkeypatch.setattr(selective, "tqdm", partial(selective.tqdm, disable=True))
    out = tmp_path / "out"
    main, argv = _command(command, assets, out)
    line = one_error(*run_main(main, argv, capsys)[::2])
    assert any(w in line for w in ("no space", "quota", "read-only")), line
    # nothing half-written (a training's work folder, kept for resuming, aside)
    assert not out.exists() and [n for n in siblings(out) if ".work" not in n] == []


def test_testbed_killed_while_saving_then_rerun(tmp_path, capsys):
    """SIGKILL inside the atomic output (the model written, the card not): the rerun
    removes the dead build's temporary folder and resumes from the last checkpoint."""
    from testbed import build as tb

    out = tmp_path / "tb"
    args = ["--out", out, "--preset", "tiny", "--no-progress", "--threads", "1"]
    proc = run_child("testbed.build", args, "artifacts.cards:write_model_card:1")
    assert proc.returncode == -9, proc.stderr
    assert len(list(tmp_path.glob(".tb.tmp-*"))) == 1 and not out.exists()
    code, stdout, err = run_main(tb.main, args, capsys)
    assert code == 0, err
    assert "removed 1 temporary folder" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tb"]
    assert tb.is_complete(out)


# ------------------------------------------------------------------------------ grading

HOSTILE = [
    r"9^{9^{9^{9}}}",
    r"10^{10^{10}}",
    r"2^{2^{2^{2^{2^{2}}}}}",
    r"\sqrt{2}^{10^{10}}",
    r"2^{-10^{10}}",
    "2**10**10**10",
    "1000000!",
    "(" * 3000 + "1" + ")" * 3000,
    "{" * 20 + "1" + "}" * 20,
    r"\left(" * 40 + "1" + r"\right)" * 40,
    "+".join(["1"] * 1000),
]


@pytest.mark.parametrize("answer", HOSTILE, ids=lambda a: a[:24])
def test_hostile_answers_are_ungradable_fast_and_never_correct(answer):
    from evals.grading import Grade, math_grade

    for reference in ("1", "5", str(1000)):
        t = time.perf_counter()
        grade = math_grade(f"<think>x</think> \\boxed{{{answer}}}", reference)
        assert time.perf_counter() - t < 0.5
        assert grade == Grade(False, answer, True, ungradable=True)


def test_padding_is_not_rewarded():
    from evals.grading import math_grade

    ones = "+".join(["1"] * 1000)
    assert not math_grade(f"</think> \\boxed{{{ones}}}", "1").correct
    assert not math_grade(f"</think> \\boxed{{{ones}}}", "1000").correct
    short = "+".join(["1"] * 20)  # short sums are still graded, by value
    assert math_grade(f"</think> \\boxed{{{short}}}", "20").correct
    assert not math_grade(f"</think> \\boxed{{{short}}}", "1").correct


def test_time_bound_holds_in_threads_and_for_work_stuck_in_c(monkeypatch):
    """Past the pre-check, math-verify runs under the deadline in a worker process: from a
    non-main thread (where signal-based timeouts do not work) and on work stuck in C (a
    huge integer power), the call returns ungradable near the deadline and the next call
    works."""
    import evals.verify as verify
    from evals.grading import math_grade

    monkeypatch.setenv("SHORTCOT_GRADE_TIMEOUT", "1")
    monkeypatch.setattr(verify, "precheck", lambda answer: None)  # only the deadline now
    results = {}

    def grade(key, answer):
        t = time.perf_counter()
        results[key] = (math_grade(f"</think> \\boxed{{{answer}}}", "5"), time.perf_counter() - t)

    threads = [
        threading.Thread(target=grade, args=("c", r"10^{10^{10}}")),
        threading.Thread(target=grade, args=("python", "{" * 16 + "5" + "}" * 16)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for key in ("c", "python"):
        grade_, seconds = results[key]
        assert grade_.ungradable and not grade_.correct, key
        assert seconds < 15, (key, seconds)
    assert math_grade(r"</think> \boxed{\frac{10}{2}}", "5").correct  # the worker restarted


def test_ungradable_is_counted_not_fatal():
    from distill.compress import verify_trace
    from distill.strategies import Context, Trace
    from evals.grading import math_grade
    from evals.metrics import summarize
    from train.length_reward import LengthReward, RewardConfig

    bomb = r"</think> \boxed{10^{10^{10}}}"
    reward = LengthReward(
        RewardConfig(reward_method="truncation", grader="math", target_length=50), [0]
    )
    logged = {}
    out = reward(
        ["p", "p"], [bomb, r"</think> \boxed{5}"], [[1, 0], [1, 0]], answer=["5", "5"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )  # fmt: skip
    assert out == [0.0, 1.0] and logged["shortcot/ungradable_rate"] == 0.5
    ctx = Context("5", math_grade, len)
    assert verify_trace(Trace(bomb, 3, 3), ctx) == "ungradable"
    records = [
        {"id": "a", "sample": 0, "tokens": 3, "correct": False, "truncated": False, "ungradable": True},
        {"id": "a", "sample": 1, "tokens": 3, "correct": True, "truncated": False},
    ]  # fmt: skip
    assert summarize(records)["n_ungradable"] == 1


def test_environment_errors_are_recognised_through_causes():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as err:
        assert environment_error(err).startswith("no space left on device (/x/model.safetensors)")
    assert environment_error(ValueError("shape mismatch")) is None
    assert "read-only" in environment_error(OSError(errno.EROFS, "Read-only file system"))


def test_resume_refuses_other_settings_and_skips_half_saved_checkpoints(tmp_path):
    from artifacts.errors import ShortcotError
    from artifacts.resume import prepare_work_dir

    work = tmp_path / "work"
    assert prepare_work_dir(work, {"lr": 1}, resume=False, force=False) is None
    for step in (1, 2):
        (work / f"checkpoint-{step}").mkdir()
    (work / "checkpoint-1" / "trainer_state.json").write_text("{}")
    with pytest.raises(ShortcotError, match=r"other settings \(lr: 1 -> 2\)"):
        prepare_work_dir(work, {"lr": 2}, resume=True, force=False)
    assert prepare_work_dir(work, {"lr": 1}, resume=True, force=False) == work / "checkpoint-1"
    assert not (work / "checkpoint-2").exists()  # killed while saving: removed, never resumed
    with pytest.raises(ShortcotError, match="--resume to continue"):
        prepare_work_dir(work, {"lr": 1}, resume=False, force=False)
    assert prepare_work_dir(work, {"lr": 2}, resume=False, force=True) is None
    assert list(work.glob("checkpoint-*")) == []


def test_forced_evaluation_refuses_a_live_writer(assets, eval_ref, tmp_path, capsys):
    from evals import run as evals_run

    out = tmp_path / "out"
    shutil.copytree(eval_ref, out)
    staging = tmp_path / ".out.new"
    staging.mkdir()
    (staging / OWNER_FILE).write_text(
        json.dumps({**owner_record(), "pid": 1, "start": _start_of(1)})
    )
    args = _eval_args(assets, out, None, "--seed", "1", "--force")
    assert "another evals.run" in one_error(*run_main(evals_run.main, args, capsys)[::2])
    assert snapshot(out) == snapshot(eval_ref)


def test_forced_run_with_a_typo_keeps_the_earlier_forced_samples(
    assets, eval_ref, tmp_path, capsys
):
    from evals import run as evals_run

    out, staging = tmp_path / "out", tmp_path / ".out.new"
    shutil.copytree(eval_ref, out)
    shutil.copytree(eval_ref, staging)  # an earlier forced run's samples (other settings)
    before = snapshot(staging)
    args = _eval_args(assets, out, assets / "bsae", "--seed", "1", "--force")
    assert "does not exist" in one_error(*run_main(evals_run.main, args, capsys)[::2])
    assert snapshot(staging) == before and snapshot(out) == snapshot(eval_ref)
