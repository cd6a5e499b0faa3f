"""merge.sweep: the choice rule (golden) and a tiny end-to-end sweep whose merges are
checked against an independent computation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model_dir
from safetensors.torch import load_file

from merge.sweep import choose, main


def test_choose_rule_golden():
    rows = [
        {"accuracy": 80.0, "mean_tokens": 50.0},  # base-level accuracy, long
        {"accuracy": 79.5, "mean_tokens": 35.0},  # within 1 point: qualifies, shorter
        {"accuracy": 60.0, "mean_tokens": 10.0},  # much shorter but far below the base
    ]
    assert choose(rows, base_accuracy=80.0, tolerance=1.0) == 1
    assert choose(rows, base_accuracy=80.0, tolerance=0.0) == 0
    assert choose(rows, base_accuracy=80.0, tolerance=25.0) == 2
    # nothing within tolerance: most accurate wins
    assert choose(rows, base_accuracy=99.0, tolerance=1.0) == 0


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("sweep_pair")
    base = make_tiny_model_dir(root / "base", tiny_tokenizer, seed=0)
    tuned = make_tiny_model_dir(root / "tuned", tiny_tokenizer, seed=1)
    data = root / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
            for i in range(2)
        )
    )
    return root, base, tuned, data


def test_sweep_end_to_end(pair, monkeypatch):
    root, base, tuned, data = pair
    uploads = []
    monkeypatch.setattr(
        "merge.sweep.push_folder", lambda folder, repo, **kw: uploads.append((folder, repo, kw))
    )
    out = root / "sweep"
    args = [
        "--base",
        str(root / "base"),
        "--tuned",
        str(root / "tuned"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--densities",
        "0.5",
        "--scales",
        "0.5",
        "1.0",
        "--grader",
        "math",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
        "--tolerance",
        "100",
    ]
    assert main([*args, "--push_to_hub", "--hub_model_id", "me/best"]) == 0
    # the chosen merge is what --push_to_hub uploads
    assert [(f, r, kw["private"]) for f, r, kw in uploads] == [(out / "best", "me/best", False)]
    report = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["base", "tuned", "d0.5_s0.5", "d0.5_s1"]
    assert (out / "pareto.png").stat().st_size > 0
    # with tolerance 100 every merge qualifies: the chosen one has the fewest tokens
    merges = report["rows"][2:]
    fewest = min(merges, key=lambda r: (r["mean_tokens"], -r["accuracy"]))
    assert report["chosen"]["label"] == fewest["label"]
    # the chosen merge's weights equal base + scale * top-50% delta, computed independently
    d, s = report["chosen"]["density"], report["chosen"]["scale"]
    got = load_file(out / "best" / "model.safetensors")
    b_sd, t_sd = base.state_dict(), tuned.state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    delta = (t_sd[name] - b_sd[name]).float()
    k = int(d * delta.numel())
    thresh = delta.abs().flatten().sort(descending=True).values[k - 1]
    expect = b_sd[name] + s * delta * (delta.abs() >= thresh)
    torch.testing.assert_close(got[name], expect, rtol=0, atol=1e-6)
    # a rerun with the same --out is refused without --force
    with pytest.raises(Exception, match="already exists"):
        main(args)


def test_sweep_marks_the_paper_point_and_grows_with_limit(pair):
    """The paper's 0.25 / 0.7 is labelled as such, and a rerun with a larger --limit or
    another --scope re-evaluates the grid points instead of reusing the old ones."""
    root, *_ = pair
    out = root / "sweep_paper"
    args = [
        "--base",
        str(root / "base"),
        "--tuned",
        str(root / "tuned"),
        "--data",
        str(root / "data.jsonl"),
        "--out",
        str(out),
        "--densities",
        "0.25",
        "--scales",
        "0.7",
        "--grader",
        "math",
        "--samples",
        "1",
        "--max-new-tokens",
        "2",
    ]
    assert main([*args, "--limit", "1"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert rows[2]["label"] == "d0.25_s0.7 (paper)" and rows[2]["n"] == "1x1"
    assert main([*args, "--limit", "2", "--force"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["n"] for r in rows] == ["2x1", "2x1", "2x1"]
    # another scope is another merge: its grid point is merged and evaluated anew
    work = root / "sweep_paper.work" / "eval"
    assert len(list(work.glob("d0.25_s0.7-*"))) == 1
    assert main([*args, "--limit", "2", "--force", "--scope", "global"]) == 0
    assert len(list(work.glob("d0.25_s0.7-*"))) == 2
