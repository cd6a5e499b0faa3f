"""The whole pipeline end to end on the tiny testbed preset (about a minute on CPU).

Checks results, not only that it ran: the merged model equals base + 0.7 * top-25% of the
DLER delta (computed here independently), the trained and distilled models moved away from
the base, every evaluation covered the test problems, the report compares the four models,
and a rerun skips every stage while a changed merge setting reruns only what depends on it.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from artifacts.jsonl import read_jsonl, write_jsonl
from pipeline.__main__ import main
from testbed.build import main as build_testbed
from testbed.task import parse_problem
from testbed.teacher import teacher_completion

N_EVAL = 6


def _state(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    tb = root / "testbed"
    with pytest.raises(SystemExit) as exit_info:
        from artifacts.errors import run_cli

        run_cli(build_testbed, ["--out", str(tb), "--preset", "tiny", "--no_progress"])
    assert exit_info.value.code == 0
    # The tiny model is untrained, so it rarely answers correctly: distil from the
    # testbed teacher's traces instead (a "folder of existing traces" teacher).
    rng = random.Random(0)
    rows = list(read_jsonl(tb / "data" / "train.jsonl"))[:8]
    traces = [
        {
            "id": r["id"],
            "problem": r["problem"],
            "reference": r["answer"],
            "completion": teacher_completion(parse_problem(r["problem"]), rng),
        }
        for r in rows
    ]
    write_jsonl(root / "traces.jsonl", traces)
    rl = "num_generations: 4, per_device_train_batch_size: 8, max_completion_length: 24, "
    rl += "save_steps: 100, dynamic_sampling: false, max_steps: 2"
    args = [
        "--workdir", str(root / "run"),
        "--testbed_out", str(tb),
        "--testbed_preset", "tiny",
        "--distill_teacher", str(root / "traces.jsonl"),
        "--rl_args", f"{{{rl}, target_length: 24}}",
        "--rl2_args", f"{{{rl}, target_length: 16}}",
        "--distill_build_args", "{limit: 8, strategy: first-correct}",
        "--distill_sft_args", "{max_steps: 2}",
        "--eval_args", f"{{limit: {N_EVAL}, samples: 1, max_new_tokens: 24}}",
    ]  # fmt: skip
    assert main(["run", *args]) == 0
    return root, args


def test_pipeline_produces_correct_artifacts(run):
    root, _ = run
    work = root / "run"
    base = _state(root / "testbed" / "model")
    stage1 = _state(work / "models" / "dler_stage1")
    dler = _state(work / "models" / "dler")
    merged = _state(work / "models" / "merged")
    distilled = _state(work / "models" / "distilled")
    assert any(not torch.equal(base[k], stage1[k]) for k in base), "RL did not change the model"
    assert any(not torch.equal(stage1[k], dler[k]) for k in base), "rl2 did not continue it"
    assert any(not torch.equal(base[k], distilled[k]) for k in base), "SFT did not change the model"
    for name in base:  # independent magnitude-selective merge, entry by entry
        delta = dler[name].float() - base[name].float()
        k = max(1, int(0.25 * delta.numel()))
        keep = torch.zeros(delta.numel(), dtype=torch.bool)
        keep[torch.sort(delta.abs().flatten(), descending=True, stable=True).indices[:k]] = True
        expect = base[name].float() + 0.7 * delta * keep.view_as(delta)
        torch.testing.assert_close(merged[name].float(), expect, rtol=0, atol=1e-6, msg=name)
    for name in ("base", "dler", "merged", "distilled"):
        summary = json.loads((work / "eval" / name / "summary.json").read_text())
        assert summary["n_problems"] == N_EVAL
    table, by_level = (work / "report" / "table.md").read_text().split("\nBy difficulty")
    assert [line.split("|")[1].strip() for line in table.strip().splitlines()[2:]] == [
        "base",
        "dler",
        "merged",
        "distilled",
    ]
    # one row per model in the per-difficulty table too, with the tiny preset's levels 2-4
    rows = [line for line in by_level.splitlines() if line.startswith("| ")]
    assert rows[0] == "| run | 2 | 3 | 4 |"
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["base", "dler", "merged", "distilled"]
    assert (work / "report" / "pareto.png").stat().st_size > 0
    assert "| merge | ran |" in (work / "report" / "report.md").read_text()


def test_rerun_skips_and_changed_merge_reruns_only_downstream(run, capsys):
    root, args = run
    capsys.readouterr()
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 11
    assert main(["run", *args, "--merge_density", "0.5"]) == 0
    out = capsys.readouterr().out
    ran = {
        line.split()[1].rstrip(":")
        for line in out.splitlines()
        if line.startswith("[pipeline]") and "done in" in line
    }
    assert ran == {"merge", "eval_merged", "compare"}


def test_speed_settings_change_no_number(run):
    """Issue 15: the speed work changes no result. The same run with the first RL stage's
    rollout rows evicted after every token (instead of every 16), the second's rollouts by
    TRL's own ``generate`` (no eviction, every prompt copy prefilled), rl2 on one thread
    (the default gives it 2) and a one-thread merge (instead of the cores available) gives
    the same models, samples and table."""
    root, args = run
    assert main(["run", *args]) == 0  # the fixture's settings again (another test changed one)
    fast = root / "run"
    slow = root / "run_speed"
    changed = list(args)
    changed[changed.index("--workdir") + 1] = str(slow)
    for key, evict in (("--rl_args", 1), ("--rl2_args", 0)):
        i = changed.index(key) + 1
        changed[i] = changed[i].rstrip("}") + f", rollout_evict_every: {evict}}}"
    changed += ["--merge_args", "{threads: 1}", "--stage_threads", "{rl2: 1}"]
    assert main(["run", *changed]) == 0
    for model in ("dler_stage1", "dler", "merged", "distilled"):
        a, b = _state(fast / "models" / model), _state(slow / "models" / model)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model
    for name in ("base", "dler", "merged", "distilled"):
        drop = ("gen_seconds",)
        a = [
            {k: v for k, v in r.items() if k not in drop}
            for r in read_jsonl(fast / "eval" / name / "samples.jsonl")
        ]
        b = [{k: v for k, v in r.items() if k not in drop}
             for r in read_jsonl(slow / "eval" / name / "samples.jsonl")]  # fmt: skip
        assert a == b, name
    assert (fast / "report" / "table.md").read_text() == (slow / "report" / "table.md").read_text()
