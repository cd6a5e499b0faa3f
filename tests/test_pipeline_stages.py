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
