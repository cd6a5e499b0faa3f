"""evals.run end to end on the tiny model: records, resume, settings checks, budget forcing,
vote; evals.data loading; evals.compare CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from artifacts.errors import ShortcotError
from artifacts.jsonl import read_jsonl, write_jsonl
from evals import compare as compare_cli
from evals import run as run_cli
from evals.backends import Request, SamplingParams, load_backend
from evals.data import load_problems
from evals.metrics import pass_at_1
from evals.prompts import build_messages
from evals.run import EvalConfig, evaluate

PROBLEMS = [
    {"id": "p1", "problem": "What is 12 + 7?", "answer": "19", "difficulty": 1},
    {"id": "p2", "problem": "What is 3 + 5?", "answer": "8", "difficulty": 2},
    {"id": "p3", "problem": "a 3 b 5 c 2 sum mod 10", "answer": "0", "difficulty": 2},
]

# A grader plugged in by module:function: "correct" when the completion has an even number
# of characters, so accuracy is neither 0 nor 1 on random text and can be checked by hand.
GRADER_SRC = """
from evals.grading import Grade
def grade(completion, reference):
    return Grade(len(completion) % 2 == 0, str(len(completion)), True)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    import sys

    from test_evals_backends import make_sharp_model_dir

    root = tmp_path_factory.mktemp("evals_run")
    model = make_sharp_model_dir(root / "model", tiny_tokenizer)
    data = root / "problems.jsonl"
    write_jsonl(data, PROBLEMS)
    (root / "parity_grader.py").write_text(GRADER_SRC)
    sys.path.insert(0, str(root))
    backend = load_backend("hf", str(model), batch_size=4, device="cpu")
    yield {"root": root, "model": str(model), "data": str(data), "backend": backend}
    sys.path.remove(str(root))


def cfg_for(setup, out, **kw):
    base = dict(
        model=setup["model"],
        data=setup["data"],
        out=str(out),
        grader="parity_grader:grade",
        samples=2,
        max_new_tokens=10,
        batch_size=4,
        progress=False,
    )
    base.update(kw)
    return EvalConfig(**base)


def records(out):
    return {(r["id"], r["sample"]): r for r in read_jsonl(Path(out) / "samples.jsonl")}


def test_evaluate_records_and_summary(setup, tmp_path):
    out = tmp_path / "run"
    summary = evaluate(cfg_for(setup, out), backend=setup["backend"])
    recs = records(out)
    assert sorted(recs) == [(p["id"], k) for p in PROBLEMS for k in range(2)]
    # each record is exactly what the backend generates for that problem and sample index
    b = setup["backend"]
    params = SamplingParams(max_new_tokens=10, temperature=0.6, top_p=0.95)
    keys = [(p, k) for p in PROBLEMS for k in range(2)]
    reqs = [Request(b.prompt_ids(build_messages(p["problem"])), k) for p, k in keys]
    for (p, k), c in zip(keys, b.generate_requests(reqs, params, progress=False)):
        r = recs[(p["id"], k)]
        assert r["completion"] == c.text and r["tokens"] == c.num_tokens
        assert r["truncated"] == (not c.finished)
        assert r["correct"] == (len(c.text) % 2 == 0) and r["answer"] == str(len(c.text))
        assert r["difficulty"] == p["difficulty"] and r["reference"] == p["answer"]
    # the summary agrees with an independent computation from the records
    acc, se = pass_at_1([[recs[(p["id"], k)]["correct"] for k in range(2)] for p in PROBLEMS])
    assert summary["accuracy"] == pytest.approx(acc) and summary["accuracy_se"] == pytest.approx(se)
    tokens = [r["tokens"] for r in recs.values()]
    assert summary["mean_tokens"] == pytest.approx(sum(tokens) / 6)
    assert summary["truncation_rate"] == pytest.approx(
        sum(r["truncated"] for r in recs.values()) / 6
    )
    assert summary["n_problems"] == 3 and summary["n_samples"] == 6
    assert set(summary["by_difficulty"]) == {"1", "2"}
    assert summary["by_difficulty"]["1"]["n_problems"] == 1
    assert summary["throughput_tokens_per_s"] > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["accuracy"] == summary["accuracy"]
    assert "| accuracy (%)" in (out / "summary.md").read_text()
    assert json.loads((out / "settings.json").read_text())["generation"]["max_new_tokens"] == 10


def test_resume_equals_uninterrupted_run(setup, tmp_path):
    full = tmp_path / "full"
    evaluate(cfg_for(setup, full, samples=3), backend=setup["backend"])
    part = tmp_path / "part"
    # "interrupted": first a smaller run, then a torn last line as a crash would leave it
    evaluate(cfg_for(setup, part, samples=2, limit=2), backend=setup["backend"])
    first = (part / "samples.jsonl").read_text()
    with (part / "samples.jsonl").open("a") as f:
        f.write('{"id": "p3", "sam')
    calls = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def generate_requests(self, reqs, params, progress=True):
            calls.append(len(reqs))
            return self.inner.generate_requests(reqs, params, progress)

    summary = evaluate(cfg_for(setup, part, samples=3), backend=Spy(setup["backend"]))
    assert sum(calls) == 9 - 4  # only the missing samples were generated
    assert (part / "samples.jsonl").read_text().startswith(first)
    full_recs, part_recs = records(full), records(part)
    assert sorted(full_recs) == sorted(part_recs)
    for key, r in full_recs.items():
        assert part_recs[key]["completion"] == r["completion"]
    assert summary["accuracy"] == json.loads((full / "summary.json").read_text())["accuracy"]
    # a rerun with nothing to do only recomputes the summary (no backend needed)
    calls.clear()
    evaluate(cfg_for(setup, part, samples=3), backend=Spy(setup["backend"]))
    assert calls == []


def test_settings_mismatch_and_force(setup, tmp_path):
    out = tmp_path / "run"
    evaluate(cfg_for(setup, out, samples=1, limit=1), backend=setup["backend"])
    with pytest.raises(ShortcotError, match=r"other settings \(temperature: 0.6 -> 1.0\)"):
        evaluate(cfg_for(setup, out, samples=1, limit=1, temperature=1.0), backend=setup["backend"])
    evaluate(
        cfg_for(setup, out, samples=1, limit=1, temperature=1.0, force=True),
        backend=setup["backend"],
    )
    assert json.loads((out / "settings.json").read_text())["generation"]["temperature"] == 1.0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ShortcotError, match="not an evals.run folder"):
        evaluate(cfg_for(setup, tmp_path / "other"), backend=setup["backend"])


def test_think_budget_and_vote(setup, tmp_path):
    out = tmp_path / "budget"
    b = setup["backend"]
    close = b.encode("</think>")
    assert len(close) == 1
    summary = evaluate(
        cfg_for(
            setup, out, samples=4, vote=2, think_budget=4, budget_cue="</think>", max_new_tokens=9
        ),
        backend=b,
    )
    for r in records(out).values():
        assert r["tokens"] <= 9
        if r["forced"]:  # 4 thinking tokens, then the cue closed the think block
            assert r["thinking_tokens"] == 5
            assert "</think>" in r["completion"]
    assert any(r["forced"] for r in records(out).values())
    assert summary["vote"]["k"] == 2 and summary["vote"]["groups"] == 6
    tok_per_vote = [
        sum(records(out)[(p["id"], k)]["tokens"] for k in (g, g + 1))
        for p in PROBLEMS
        for g in (0, 2)
    ]
    assert summary["vote"]["tokens_per_problem"] == pytest.approx(sum(tok_per_vote) / 6)


def test_cli_end_to_end_and_bad_input(setup, tmp_path, capsys, monkeypatch):
    def argv(out, *extra):
        return [
            "--model",
            setup["model"],
            "--data",
            setup["data"],
            "--out",
            str(out),
            "--samples",
            "1",
            "--max-new-tokens",
            "6",
            "--limit",
            "1",
            "--no-progress",
            "--temperature",
            "0",
            *extra,
        ]

    out = tmp_path / "cli"
    pushed = []
    monkeypatch.setattr(
        "artifacts.hub.push_folder",
        lambda folder, repo, **kw: pushed.append((folder, repo, kw)) or "url",
    )
    hub = ["--push_to_hub", "--hub_model_id", "me/evals", "--hub_private_repo"]
    assert run_cli.main(argv(out, *hub)) == 0
    assert "wrote" in capsys.readouterr().out
    assert pushed == [(str(out), "me/evals", {"private": True, "repo_type": "dataset"})]
    assert len(records(out)) == 1
    bad = [
        (["--data", str(tmp_path / "missing.jsonl")], "neither a file"),
        (["--prompt-template", "no placeholder"], "must contain {problem}"),
        (["--vote", "4"], "needs --samples >= 4"),
        (["--think-budget", "6"], "must be below --max-new-tokens"),
        (["--grader", "nope"], "unknown grader"),
        (["--problem-column", "question"], "no problem column"),
        (["--top-p", "0"], "top_p"),
    ]
    for extra, msg in bad:
        with pytest.raises(ShortcotError, match=msg):
            run_cli.main(argv(tmp_path / "bad", *extra))
    assert not (tmp_path / "bad").exists()  # refused before writing anything
    from artifacts.errors import run_cli as wrap

    with pytest.raises(SystemExit) as exit_info:
        wrap(run_cli.main, argv(tmp_path / "bad", "--vote", "4"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --vote 4 needs --samples >= 4")


def test_load_problems_formats(tmp_path, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"question": "q1", "solution": 0.5, "level": "Level 3", "uid": "x"},
        {"question": "q2", "solution": 7.0, "level": "Level 1", "uid": "y"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    probs = load_problems(
        tmp_path / "d.parquet", problem_column="question", answer_column="solution", id_column="uid"
    )
    assert [(p.id, p.problem, p.answer, p.difficulty) for p in probs] == [
        ("x", "q1", "0.5", "Level 3"),
        ("y", "q2", "7", "Level 1"),
    ]  # AMC-style 7.0 -> "7"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "saved")
    )
    probs = load_problems(tmp_path / "saved", "question", "solution", limit=1)
    assert [(p.id, p.answer) for p in probs] == [("0", "0.5")]
    with pytest.raises(ShortcotError, match="no split 'train'"):
        load_problems(tmp_path / "saved", "question", "solution", split="train")
    (tmp_path / "arr.json").write_text(json.dumps([{"problem": "p", "answer": 3}]))
    assert load_problems(tmp_path / "arr.json")[0].answer == "3"
    write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "problem": "a", "answer": "1"}] * 2)
    with pytest.raises(ShortcotError, match="twice"):
        load_problems(tmp_path / "dup.jsonl")
    with pytest.raises(ShortcotError, match="no answer column"):
        load_problems(tmp_path / "d.parquet", problem_column="question")

    # presets: the Hub is asked only for a preset name, with the built-in column mapping
    asked = []

    def fake_load_dataset(hub_id, config=None, split=None):
        asked.append((hub_id, config, split))
        return datasets.Dataset.from_list(
            [{"question": "Tom has 3...", "answer": "3 + 4 = 7\n#### 1,007"}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (p,) = load_problems("gsm8k")
    assert asked == [("openai/gsm8k", "main", "test")]
    assert (p.problem, p.answer) == ("Tom has 3...", "1007")

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ShortcotError, match="cannot load HuggingFaceH4/MATH-500"):
        load_problems("math500")


def _fake_run(folder: Path, acc, se, tokens):
    folder.mkdir()
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "accuracy": acc,
                "accuracy_se": se,
                "mean_tokens": tokens,
                "p90_tokens": 2 * tokens,
                "truncation_rate": 0.0,
                "n_problems": 5,
                "samples_per_problem": 2,
            }
        )
    )
    return str(folder)


def test_compare_cli_table_and_plot(tmp_path, capsys):
    a = _fake_run(tmp_path / "base", 0.60, 0.02, 2000.0)
    b = _fake_run(tmp_path / "dler", 0.62, 0.02, 900.0)
    c = _fake_run(tmp_path / "bad", 0.50, 0.03, 1500.0)
    plot, table = tmp_path / "pareto.png", tmp_path / "table.md"
    assert (
        compare_cli.main(
            [
                "--dirs",
                a,
                b,
                c,
                "--labels",
                "base",
                "DLER",
                "bad",
                "--plot",
                str(plot),
                "--out",
                str(table),
            ]  # fmt: skip
        )
        == 0
    )
    text = table.read_text()
    assert "| DLER | 62.0 | 2.0 | +2.0 | 900 | -55.0 | 1800 | 0.0 | 5x2 | * |" in text
    assert "| bad | 50.0 | 3.0 | -10.0 | 1500 | -25.0 |" in text
    assert text in capsys.readouterr().out
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShortcotError, match="already exists"):
        compare_cli.main(["--dirs", a, b, "--plot", str(plot)])
    compare_cli.main(["--dirs", a, b, "--plot", str(plot), "--force"])
    with pytest.raises(ShortcotError, match="labels"):
        compare_cli.main(["--dirs", a, b, "--labels", "x"])
    with pytest.raises(ShortcotError, match="no summary.json"):
        compare_cli.main(["--dirs", a, str(tmp_path)])
    with pytest.raises(ShortcotError, match="required: --dirs"):
        compare_cli.main([a, b])  # folders are given with --dirs
    # the same settings from a recipe (keys = field names), a flag winning over it
    recipe = tmp_path / "compare.yaml"
    recipe.write_text(f"dirs: [{a}, {b}]\nlabels: [base, DLER]\nout: {table}\nforce: true\n")
    (cfg,) = compare_cli.parse_args(["--config", str(recipe), "--title", "t"])
    assert (cfg.dirs, cfg.labels, cfg.out, cfg.force, cfg.title) == (
        [a, b],
        ["base", "DLER"],
        str(table),
        True,
        "t",
    )
    assert compare_cli.main(["--config", str(recipe)]) == 0
    assert "| DLER | 62.0 |" in table.read_text()


def test_every_setting_has_a_help_text():
    from evals.compare import CompareConfig
    from evals.engine import EngineOptions

    for cls in (EvalConfig, EngineOptions, CompareConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_r1_style_template_opens_think_block_in_prompt(setup, tmp_path):
    """With ``<think>`` in the generation prompt (R1 / Qwen3 templates), an unclosed
    completion is all thinking; with a plain template it has no think block."""
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "r1_model"
    shutil.copytree(setup["model"], model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = tok.chat_template.replace(
        "'<|assistant|>\n' }}{% endif %}", "'<|assistant|>\n<think>\n' }}{% endif %}"
    )
    tok.save_pretrained(model)
    assert tok.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    ).endswith("<think>\n")
    cfg = cfg_for(setup, tmp_path / "r1", model=str(model), samples=2, max_new_tokens=8)
    cfg_plain = cfg_for(setup, tmp_path / "plain", samples=2, max_new_tokens=8)
    evaluate(cfg)
    evaluate(cfg_plain, backend=setup["backend"])
    for out in ("r1", "plain"):
        for r in records(tmp_path / out).values():
            if "</think>" in r["completion"]:
                continue  # closed by chance: split at the tag
            if out == "r1":
                assert (r["thinking_tokens"], r["answer_tokens"]) == (r["tokens"], 0)
            elif "<think>" not in r["completion"]:
                assert (r["thinking_tokens"], r["answer_tokens"]) == (None, r["tokens"])


def test_config_file_and_flag_precedence(setup, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {setup['model']}\ndata: {setup['data']}\nsamples: 3\ntemperature: 0.7\n"
        "max_new_tokens: '12'\ntensor_parallel_size: 1\nhub_model_id: me/evals\n"
    )
    cfg, hub = run_cli.parse_args(["--config", str(recipe), "--out", "x", "--samples", "2"])
    assert (cfg.model, cfg.samples, cfg.temperature, cfg.max_new_tokens) == (
        setup["model"],
        2,
        0.7,
        12,
    )
    assert (hub.push_to_hub, hub.hub_model_id, hub.hub_repo()) == (False, "me/evals", None)
    recipe.write_text("max-new-tokens: 12\n")  # recipe keys are the field names
    with pytest.raises(ShortcotError, match="unknown key.*did you mean max_new_tokens"):
        run_cli.parse_args(["--config", str(recipe), "--out", "x"])
    recipe.write_text("modle: typo\n")
    with pytest.raises(ShortcotError, match="unknown key"):
        run_cli.parse_args(["--config", str(recipe), "--out", "x"])
    with pytest.raises(ShortcotError, match="required: --model, --data"):
        run_cli.parse_args(["--out", "x"])
    with pytest.raises(ShortcotError, match="--push_to_hub needs --hub_model_id"):
        run_cli.main(["--model", "m", "--data", "d", "--out", str(tmp_path / "o"), "--push_to_hub"])
    assert not (tmp_path / "o").exists()  # refused before any work


RECIPES = sorted((Path(__file__).parent.parent / "configs" / "evals").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_parse(recipe):
    """Every recipe of configs/evals parses (dummy values for what a recipe leaves to the
    command line) and passes the settings checks."""
    from evals.config import validate

    cfg, _ = run_cli.parse_args(
        ["--config", str(recipe), "--model", "m", "--data", "d", "--out", "o"]
    )
    assert cfg.temperature == 0.6 and cfg.top_p == 0.95
    validate(cfg)
    keys = set(yaml.safe_load(recipe.read_text()))
    assert keys <= {f.name for f in dataclasses.fields(EvalConfig)}


# ----------------------------------------------- the answer contract on thinking templates

THINK_PROBLEMS = [{"id": "q1", "problem": "What is 12 + 7?", "answer": "19"}]
# sample index -> (completion, ends with EOS); in the comments, what each one is under a
# template that opens the think block in the prompt (DeepSeek-R1-Distill) / one that does not
THINK_SCRIPT = [
    ("12 + 7 = 19, so \\boxed{19}", True),  # unclosed: no answer / no think block: answer
    ("12 + 7 = 19. </think> \\boxed{19}", True),  # closed by the completion: answer
    ("<think> 12 + 7 = 19 </think> \\boxed{19}", True),  # opened and closed: answer
    ("<think> 12 + 7 = 19, \\boxed{19}", True),  # opened by the completion, never closed
    ("12 + 7 = 19, \\boxed{19}. " * 12, False),  # cut off at the limit while thinking
]


def think_script(prompt: str, sample: int):
    return THINK_SCRIPT[sample]


@pytest.mark.parametrize(
    "template, flag, opened, correct",
    [
        ("r1", "auto", True, [False, True, True, False, False]),
        ("qwen3", "auto", False, [True, True, True, False, True]),
        ("qwen3_no_think", "auto", False, [True, True, True, False, True]),
        ("r1", "no", False, [True, True, True, False, True]),  # the flag overrides
        ("qwen3", "yes", True, [False, True, True, False, False]),
    ],
)
def test_thinking_templates_graded_by_the_answer_contract(
    tmp_path, tiny_tokenizer, template, flag, opened, correct
):
    """evals.run end to end on chat templates written like DeepSeek-R1-Distill's (the
    prompt opens <think>) and Qwen3's (thinking on / off): a box written while thinking
    never counts where the prompt opened the block, and the think/answer token split
    follows the same contract."""
    import copy

    from chat_templates import TEMPLATES, ScriptedBackend

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATES[template]
    data = tmp_path / "q.jsonl"
    write_jsonl(data, THINK_PROBLEMS)
    out = tmp_path / "run"
    flag_kw = {} if flag == "auto" else {"prompt_opens_think": flag}  # auto: the default
    cfg = EvalConfig(model="m", data=str(data), out=str(out), samples=5, max_new_tokens=40,
                     progress=False, **flag_kw)  # fmt: skip
    summary = evaluate(cfg, backend=ScriptedBackend(tok, think_script))
    recs = [records(out)[("q1", k)] for k in range(5)]
    assert [r["correct"] for r in recs] == correct
    assert [r["formatted"] for r in recs] == correct  # every box here holds 19
    assert [r["answer"] for r in recs] == ["19" if c else None for c in correct]
    assert [r["truncated"] for r in recs] == [False] * 4 + [True]
    assert summary["accuracy"] == pytest.approx(sum(correct) / 5)
    assert all(r["prompt_opens_think"] is opened for r in recs)
    close = tok.convert_tokens_to_ids("</think>")
    for r, (text, _) in zip(recs, THINK_SCRIPT):
        if "</think>" in text:
            ids = tok(r["completion"], add_special_tokens=False)["input_ids"]
            cut = ids.index(close) + 1
            assert (r["thinking_tokens"], r["answer_tokens"]) == (cut, r["tokens"] - cut)
        elif opened or "<think>" in text:
            assert (r["thinking_tokens"], r["answer_tokens"]) == (r["tokens"], 0)
        else:
            assert (r["thinking_tokens"], r["answer_tokens"]) == (None, r["tokens"])
    # the setting is part of the folder's generation settings
    with pytest.raises(ShortcotError, match="prompt_opens_think"):
        evaluate(dataclasses.replace(cfg, prompt_opens_think="yes" if flag != "yes" else "no"))


def test_prompt_opens_think_flag_parses_and_is_checked(setup):
    from artifacts.cli import HubArguments, make_parser

    cfg, _ = run_cli.parse_args(
        ["--model", "m", "--data", "d", "--out", "o", "--prompt_opens_think", "yes"]
    )
    assert cfg.prompt_opens_think == "yes"
    assert (
        run_cli.parse_args(["--model", "m", "--data", "d", "--out", "o"])[0].prompt_opens_think
        == "auto"
    )
    with pytest.raises(ShortcotError, match="invalid choice: 'x'"):
        run_cli.parse_args(
            ["--model", "m", "--data", "d", "--out", "o", "--prompt-opens-think", "x"]
        )
    assert (
        "--prompt_opens_think" in make_parser([EvalConfig, HubArguments], "evals.run").format_help()
    )
