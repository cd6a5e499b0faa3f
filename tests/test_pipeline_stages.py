"""The pipeline's stage cache: skip when current, rebuild on changed settings, fail loudly."""

from __future__ import annotations

import pytest

from artifacts.errors import ShortcotError
from pipeline.stages import Stage, run_stage, stage_is_current

WRITER = """
import argparse, pathlib, sys
p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--value")
p.add_argument("--force", action="store_true"); a = p.parse_args()
out = pathlib.Path(a.out)
if out.exists() and not a.force:
    sys.exit("exists")
if a.value == "fail":
    sys.exit(3)
out.mkdir(exist_ok=True); (out / "v.txt").write_text(a.value)
log = out.parent / "calls.txt"; log.write_text(log.read_text() + "x" if log.exists() else "x")
"""


@pytest.fixture()
def writer(tmp_path, monkeypatch):
    (tmp_path / "stage_writer.py").write_text(WRITER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def _stage(root, value):
    return Stage("write", "stage_writer", ["--out", str(root / "o"), "--value", value], root / "o")


def test_stage_cached_then_rebuilt_on_new_settings(writer):
    state, logs = writer / "state", writer / "logs"
    assert run_stage(_stage(writer, "a"), state, logs) == "ran"
    assert stage_is_current(_stage(writer, "a"), state)
    assert run_stage(_stage(writer, "a"), state, logs) == "cached"
    assert (writer / "calls.txt").read_text() == "x"
    assert not stage_is_current(_stage(writer, "b"), state)
    assert run_stage(_stage(writer, "b"), state, logs) == "ran"  # existing output -> --force
    assert (writer / "o" / "v.txt").read_text() == "b"
    assert (writer / "calls.txt").read_text() == "xx"


def test_failed_stage_names_its_log(writer):
    with pytest.raises(ShortcotError, match=r"stage write failed \(exit 3\); see .*write.log"):
        run_stage(_stage(writer, "fail"), writer / "state", writer / "logs")
    assert not (writer / "state" / "write.json").exists()


def test_run_all_respects_needs_and_jobs_and_stops_after_a_failure(tmp_path, monkeypatch):
    """Stages start as soon as what they read is done, never more than ``jobs`` at once; a
    failure starts nothing new, lets the running stage finish, and is raised."""
    import threading
    import time as _time

    from artifacts.errors import ShortcotError
    from pipeline import stages as st

    log, lock, running, peak = [], threading.Lock(), [0], [0]

    def fake_run_stage(stage, state_dir, log_dir, env=None, stream=True):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            log.append(("start", stage.name))
        _time.sleep(0.3 if stage.name == "slow" else 0.05)
        with lock:
            running[0] -= 1
            log.append(("end", stage.name))
        if stage.name == "bad":
            raise ShortcotError("stage bad failed")
        return "ran"

    monkeypatch.setattr(st, "run_stage", fake_run_stage)

    def make(name, needs=()):
        return st.Stage(name, "m", [], tmp_path / name, needs=needs)

    graph = [make("a"), make("b", ("a",)), make("c", ("a",)), make("d", ("a",)),
             make("e", ("b", "c"))]  # fmt: skip
    times = st.run_all(graph, tmp_path / "s", tmp_path / "l", jobs=2)
    assert set(times) == {"a", "b", "c", "d", "e"} and peak[0] == 2
    order = [name for what, name in log if what == "start"]
    for s in graph:  # everything a stage needs ended before it started
        for n in s.needs:
            assert log.index(("end", n)) < log.index(("start", s.name))
    assert order[0] == "a"

    log.clear(), peak.__setitem__(0, 0)
    st.run_all(graph, tmp_path / "s", tmp_path / "l", jobs=1)
    assert [n for w, n in log if w == "start"] == ["a", "b", "c", "d", "e"] and peak[0] == 1

    log.clear()
    failing = [make("a"), make("bad", ("a",)), make("slow", ("a",)), make("after", ("bad",)),
               make("late", ("slow",))]  # fmt: skip
    with pytest.raises(ShortcotError, match="stage bad failed"):
        st.run_all(failing, tmp_path / "s", tmp_path / "l", jobs=2)
    started = [n for w, n in log if w == "start"]
    assert "after" not in started and "late" not in started
    assert ("end", "slow") in log  # the stage running beside the failure finished
