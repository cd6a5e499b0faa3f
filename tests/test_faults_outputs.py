"""Fault injection, part 2: outputs under kills, full disks and forced reruns (evals.run,
merge, testbed.build, temporaries). The promise and the method: `test_faults.py`."""

# ruff: noqa: F811  (pytest fixtures imported from faults_support are parameters by name)
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults_support import (  # noqa: F401  (fixtures are used by name)
    _eval_args,
    _no_progress_bars,
    _records,
    assets,
    eval_ref,
    mounts,
    one_error,
    run_child,
    run_main,
    same_weights,
    siblings,
    snapshot,
)
from test_faults import _command

from artifacts.jsonl import read_jsonl
from artifacts.outdir import OWNER_FILE, atomic_output_dir, owner_record, remove_stale_temporaries

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
