"""distill.build end to end: a scripted teacher (resume after an interruption), trace
files with unparsable records, the output formats and card, CLI bad input, and a real
(tiny, random) HF teacher through the evals backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from artifacts.errors import ShortcotError
from artifacts.jsonl import read_jsonl
from distill.build import build, main, parse_args
from distill.dataset import load_rows
from evals.grading import Grade

PROBLEMS = [
    {
        "id": f"p{i}",
        "problem": f"Add the digits mod 10: k {i} q 5",
        "answer": str((i + 5) % 10),
        "difficulty": 2,
    }
    for i in range(5)
]


def long_trace(i: int) -> str:
    s = (i + 5) % 10
    return (
        f"<think>\nk is {i}, total {i}. q is 5, {i}+5={s}. Wait, let me check: k is {i}, q is 5, {i}+5={s}. "
        f"So {s}. Wait, let me double-check: {i}+5={s}.\n</think>\n\\boxed{{{s}}}"
    )


def short_trace(i: int) -> str:
    s = (i + 5) % 10
    return f"<think>\nk is {i}, total {i}. q is 5, {i}+5={s}. Wait, {i}+5={s}.\n</think>\n\\boxed{{{s}}}"


TEACHER_TEXTS = [  # sample index % 4 -> (completion, ends with EOS)
    (long_trace, True),
    (short_trace, True),
    (lambda i: "<think>\nno.\n</think>\n\\boxed{11}", True),  # wrong
    (lambda i: "<think>\nk is", False),  # truncated
]


def teacher_script(prompt: str, sample: int):
    """The scripted teacher: sample 0 long, sample 1 short, sample 2 wrong, sample 3
    truncated, for the problem in the (rendered) prompt."""
    i = int(prompt.split(" k ")[1].split()[0])
    make, eos = TEACHER_TEXTS[sample % 4]
    return make(i), eos


def fake_teacher(monkeypatch, tokenizer, script=teacher_script, fail_after=None):
    """Sample the teacher through evals.run's engine with a scripted backend."""
    from chat_templates import ScriptedBackend

    fake = ScriptedBackend(tokenizer, script, fail_after=fail_after)
    monkeypatch.setattr("evals.run.load_backend", lambda *a, **k: fake)
    monkeypatch.setattr("evals.backends.load_backend", lambda *a, **k: fake)
    return fake


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def args(teacher, data, out, *extra):
    return parse_args(
        [
            "--teacher",
            str(teacher),
            "--data",
            str(data),
            "--out",
            str(out),
            "--grader",
            "testbed",
            *extra,
        ]
    )


def test_build_resumes_after_interruption(
    tmp_path, data_file, tiny_model_dir, tiny_tokenizer, monkeypatch
):
    fake = fake_teacher(monkeypatch, tiny_tokenizer, fail_after=16)
    out = tmp_path / "ds"
    cfg = args(tiny_model_dir, data_file, out, "--samples", "4", "--batch-size", "8",
               "--strategy", "shortest-correct,first-correct")  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        build(*cfg)
    assert not out.exists()  # nothing half-written
    samples = tmp_path / "ds.work" / "samples.jsonl"
    assert len(samples.read_text().splitlines()) == 4 * 4  # two batches of 2 problems x 4 samples

    fake.fail_after = None
    fake.prompts.clear()
    summary = build(*cfg)
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": PROBLEMS[4]["problem"]
          + "\nLet's think step by step and output the final answer within \\boxed{}."}],
        add_generation_prompt=True, tokenize=False,
    )  # fmt: skip
    assert [tiny_tokenizer.decode(p) for p in fake.prompts] == [prompt] * 4  # only p4 is left
    assert len(samples.read_text().splitlines()) == 5 * 4

    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 5 and sorted(ds["id"]) == [p["id"] for p in PROBLEMS]
    row = ds[0]
    i = int(row["id"][1:])
    s = (i + 5) % 10
    assert row["messages"][-1] == {
        "role": "assistant",
        "content": f"<think>\nk is {i}, total {i}. q is 5, {i}+5={s}.\n</think>\n\\boxed{{{s}}}",
    }
    assert row["messages"][0]["role"] == "user" and row["messages"][0]["content"].startswith(
        PROBLEMS[i]["problem"]
    )
    count = lambda t: len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert row["original_tokens"] == count(short_trace(i))
    assert row["compressed_tokens"] == count(row["messages"][-1]["content"])
    assert row["compression_ratio"] == pytest.approx(
        row["compressed_tokens"] / row["original_tokens"]
    )
    assert row["strategy"] == "shortest-correct,first-correct" and row["teacher"] == str(
        tiny_model_dir
    )

    assert summary["examples"] == 5 and summary["samples"] == 20
    assert summary["dropped_samples"] == {
        "shortest-correct: not the shortest": 5,
        "incorrect": 5,
        "truncated": 5,
    }
    assert summary["prompt_opens_think"] == "no"
    lens = [
        count(t)
        for t in (
            long_trace(0),
            short_trace(0),
            "<think>\nno.\n</think>\n\\boxed{11}",
            "<think>\nk is",
        )
    ]
    assert summary["mean_tokens_all_samples"] == pytest.approx(
        sum(count(t(i)) for i in range(5) for t in (long_trace, short_trace)) / 20
        + (lens[2] + lens[3]) / 4
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "Compressed reasoning chains" in (out / "README.md").read_text()
    # the work folder is an evals.run folder: the teacher's accuracy comes with it
    teacher = json.loads((tmp_path / "ds.work" / "summary.json").read_text())
    assert teacher["accuracy"] == pytest.approx(0.5) and teacher["n_samples"] == 20
    assert str(tmp_path) not in (out / "README.md").read_text()  # no local absolute paths

    # Same work folder, other sampling settings: refused rather than mixed.
    with pytest.raises(ShortcotError, match="other settings"):
        build(*args(tiny_model_dir, data_file, tmp_path / "ds2", "--samples", "4", "--work-dir", str(tmp_path / "ds.work"),
                   "--temperature", "1.0"))  # fmt: skip


def test_build_from_trace_file_skips_unparsable(tmp_path, tiny_tokenizer):
    traces = tmp_path / "traces.jsonl"
    lines = [json.dumps({"id": p["id"], "problem": p["problem"], "answer": p["answer"], "completion": long_trace(i)})
             for i, p in enumerate(PROBLEMS)]  # fmt: skip
    lines += [
        json.dumps({"id": "x1", "problem": "q", "answer": "1"}),  # no completion
        json.dumps({"problem": "q", "answer": "1", "completion": "c"}),  # no id
        json.dumps({"id": "x2", "completion": "c"}),  # no reference, no --data
        json.dumps([1, 2]),
        '{"id": "torn", "completi',
    ]
    traces.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pruned"
    summary = build(*parse_args(["--teacher", str(traces), "--out", str(out), "--grader", "testbed",
                                "--strategy", "step-prune", "--format", "jsonl"]))  # fmt: skip
    assert summary["skipped_records"] == {
        "unparsable: no completion text": 1,
        "unparsable: no id": 1,
        "unparsable: no reference answer (pass --data to join one)": 1,
        "unparsable: not a JSON object": 1,
        "unparsable: not valid JSON": 1,
    }
    assert summary["token_unit"].startswith("whitespace")
    ds = load_rows(out)
    assert len(ds) == 5
    s = (0 + 5) % 10
    assert (
        ds[0]["messages"][-1]["content"]
        == f"<think>\nk is 0, total 0. q is 5, 0+5={s}.\n</think>\n\\boxed{{{s}}}"
    )
    assert summary["compression_ratio"] == pytest.approx(12 / 30)  # words: 30 -> 12 for each trace


def test_build_parquet_and_join_with_data(tmp_path, data_file):
    traces = tmp_path / "t"
    traces.mkdir()
    (traces / "samples.jsonl").write_text(
        "".join(
            json.dumps({"id": p["id"], "completion": short_trace(i)}) + "\n"
            for i, p in enumerate(PROBLEMS)
        )
    )
    out = tmp_path / "pq"
    build(*parse_args(["--teacher", str(traces), "--data", str(data_file), "--out", str(out), "--grader", "testbed",
                      "--format", "parquet", "--strategy", "first-correct"]))  # fmt: skip
    ds = load_rows(out)
    assert len(ds) == 5 and (out / "data.parquet").exists()
    assert ds[0]["messages"][0]["content"].startswith(PROBLEMS[0]["problem"])


def test_cli_bad_input(tmp_path, data_file, tiny_model_dir):
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "distill.build", *argv], capture_output=True, text=True,
                              cwd=str(Path(__file__).parents[1]))  # fmt: skip

    r = run("--teacher", str(data_file), "--out", str(tmp_path / "o"), "--strategy", "fastest")
    assert (
        r.returncode == 2
        and "error: unknown strategy 'fastest'" in r.stderr
        and "Traceback" not in r.stderr
    )
    (tmp_path / "exists").mkdir()
    r = run("--teacher", str(data_file), "--out", str(tmp_path / "exists"))
    assert r.returncode == 2 and "already exists; pass --force" in r.stderr
    with pytest.raises(ShortcotError, match="--data is required"):
        main(["--teacher", str(tiny_model_dir), "--out", str(tmp_path / "o2")])
    with pytest.raises(ShortcotError, match="--samples must be >= 1"):
        parse_args(["--teacher", "m", "--out", "o", "--samples", "0"])
    # nothing survives: a clear error, and no output folder
    with pytest.raises(ShortcotError, match="no example survived"):
        build(
            *parse_args(
                ["--teacher", str(data_file), "--out", str(tmp_path / "o3"), "--grader", "testbed"]
            )
        )
    assert not (tmp_path / "o3").exists()


def test_build_with_real_hf_backend(tmp_path, data_file, tiny_model_dir):
    """The real evals HF backend on a random tiny model: every sample is cut off at 6 new
    tokens, so every sample is dropped as truncated (never kept), and the raw samples are
    in the work folder for a rerun."""
    out = tmp_path / "real"
    cfg = parse_args(["--teacher", str(tiny_model_dir), "--data", str(data_file), "--out", str(out),
                      "--grader", "testbed", "--samples", "2", "--max-new-tokens", "6", "--limit", "2"])  # fmt: skip
    with pytest.raises(ShortcotError, match="no example survived"):
        build(*cfg)
    recs = [
        json.loads(line)
        for line in (tmp_path / "real.work" / "samples.jsonl").read_text().splitlines()
    ]
    assert sorted((r["id"], r["sample"]) for r in recs) == [
        ("p0", 0),
        ("p0", 1),
        ("p1", 0),
        ("p1", 1),
    ]
    assert all(r["tokens"] == 6 and r["truncated"] is True for r in recs)
    assert not out.exists()


def test_config_file_and_flags(tmp_path):
    cfg_file = tmp_path / "b.yaml"
    cfg_file.write_text(
        "teacher: t\nout: o\nsamples: 3\nkeep_verification: true\nstrategy: first-correct\n"
    )
    cfg, options, hub = parse_args(["--config", str(cfg_file), "--samples", "5"])
    assert (cfg.teacher, cfg.out, cfg.samples, cfg.strategy) == ("t", "o", 5, "first-correct")
    assert options.keep_verification is True and hub.hub_repo() is None
    cfg_file.write_text("teacher: t\nsampels: 3\n")
    with pytest.raises(ShortcotError, match="unknown key\\(s\\) sampels \\(did you mean samples"):
        parse_args(["--config", str(cfg_file), "--out", "o"])
    with pytest.raises(ShortcotError, match="required: --teacher"):
        parse_args(["--out", "o"])
    with pytest.raises(ShortcotError, match="--push_to_hub needs --hub_model_id"):
        main(["--teacher", "t", "--out", str(tmp_path / "o"), "--push_to_hub"])
    cfg, options, hub = parse_args(
        ["--teacher", "t", "--out", "o", "--max-new-tokens", "7", "--keep-verification",
         "--on_fail", "drop", "--tensor_parallel_size", "2", "--push_to_hub", "--hub_model_id", "u/d"]
    )  # fmt: skip
    assert (cfg.max_new_tokens, cfg.tensor_parallel_size, options.on_fail) == (7, 2, "drop")
    assert options.keep_verification and hub.hub_repo() == "u/d"


@pytest.mark.parametrize(
    "recipe", sorted((Path(__file__).parents[1] / "configs" / "distill").glob("build_*.yaml"))
)
def test_shipped_build_recipes_parse(recipe):
    cfg, options, hub = parse_args(["--config", str(recipe), "--out", "x"])
    assert cfg.teacher and cfg.samples >= 1 and cfg.out == "x" and hub.hub_repo() is None


def test_build_from_evals_run_samples(tmp_path, data_file):
    """evals.run's samples.jsonl is a valid teacher: "reference" is the gold answer (not
    "answer", the extracted one), "truncated" marks cut-off samples, --data gives the text."""
    ev = tmp_path / "eval"
    ev.mkdir()
    recs = []
    for i, p in enumerate(PROBLEMS[:3]):
        recs.append({"id": p["id"], "sample": 0, "reference": p["answer"], "answer": "11", "truncated": False,
                     "completion": long_trace(i), "tokens": 40})  # fmt: skip
        recs.append({"id": p["id"], "sample": 1, "reference": p["answer"], "answer": None, "truncated": True,
                     "completion": short_trace(i), "tokens": 20})  # fmt: skip
    (ev / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (ev / "summary.json").write_text("{}")
    out = tmp_path / "o"
    summary = build(*parse_args(["--teacher", str(ev), "--data", str(data_file), "--out", str(out),
                                "--grader", "testbed", "--strategy", "shortest-correct"]))  # fmt: skip
    # the short samples were truncated, so the long ones are kept despite being longer
    assert summary["examples"] == 3 and summary["dropped_samples"] == {"truncated": 3}
    assert [r["messages"][-1]["content"] for r in load_rows(out)] == [
        long_trace(i) for i in range(3)
    ]


def test_perplexity_scorer_matches_hf_loss_and_runs_in_build(
    tmp_path, tiny_model_dir, tiny_tokenizer
):
    import torch
    from transformers import AutoModelForCausalLM

    from distill.perplexity import PerplexityScorer, completion_perplexity
    from distill.strategies import Context
    from evals.prompts import build_messages

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    prompt = build_messages(PROBLEMS[0]["problem"])
    text = long_trace(0)
    ppl = completion_perplexity(model, tiny_tokenizer, prompt, text)
    # independent: HF's own loss with the prompt tokens masked out
    p_ids = tiny_tokenizer(tiny_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]  # fmt: skip
    c_ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    labels = ids.clone()
    labels[0, : len(p_ids)] = -100
    with torch.no_grad():
        loss = model(ids, labels=labels).loss.item()
    assert ppl == pytest.approx(float(torch.exp(torch.tensor(loss))), rel=1e-4)

    scorer = PerplexityScorer(model, tiny_tokenizer)
    ctx = Context("5", lambda c, r: None, len, prompt=prompt)
    steps = ["a. ", "b. "]
    scores = scorer(steps, lambda th: f"<think>{th}</think> \\boxed{{5}}", ctx)
    assert len(scores) == 2
    base = completion_perplexity(model, tiny_tokenizer, prompt, "<think>a. b. </think> \\boxed{5}")
    drop_a = completion_perplexity(model, tiny_tokenizer, prompt, "<think>b. </think> \\boxed{5}")
    assert scores[0] == pytest.approx(drop_a / base - 1)

    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps({"id": p["id"], "problem": p["problem"], "answer": p["answer"],
                                          "completion": long_trace(i)}) + "\n" for i, p in enumerate(PROBLEMS[:2])))  # fmt: skip
    summary = build(*parse_args(["--teacher", str(traces), "--out", str(tmp_path / "o"), "--grader", "testbed",
                                "--detector", "testbed", "--strategy", "step-prune", "--prune-scorer", "perplexity",
                                "--prune-model", str(tiny_model_dir), "--prune-threshold", "0.5",
                                "--tokenizer", str(tiny_model_dir)]))  # fmt: skip
    assert summary["examples"] == 2 and summary["token_unit"] == "tokens"
    assert summary["mean_compressed_tokens"] <= summary["mean_original_tokens"]


def grade_or_choke(completion: str, reference: str) -> Grade:
    """Test grader that raises on reference "6" (an ungradable record)."""
    if reference == "6":
        raise ValueError("cannot parse")
    from testbed.task import grade

    return grade(completion, reference)


def test_ungradable_problem_is_counted_not_fatal(tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text("".join(json.dumps({"id": p["id"], "problem": p["problem"], "answer": p["answer"],
                                          "completion": short_trace(i)}) + "\n" for i, p in enumerate(PROBLEMS)))  # fmt: skip
    summary = build(*parse_args(["--teacher", str(traces), "--out", str(tmp_path / "o"),
                                "--grader", "test_distill_build:grade_or_choke"]))  # fmt: skip
    assert summary["examples"] == 4 and summary["dropped_problems"] == {"ungradable: ValueError": 1}


# ------------------------------------- one sampling engine, and the answer contract (issue 11)


def r1_script(prompt: str, sample: int):
    """A teacher behind a DeepSeek-R1-Distill-style template: the prompt opened <think>, so
    a finished chain holds only '... </think> answer'. Sample 0 closes it; sample 1 (the
    shortest) boxes the answer while thinking and stops without closing it; sample 2 is
    cut off at the limit."""
    i = int(prompt.split(" k ")[1].split()[0])
    s = (i + 5) % 10
    return [
        (long_trace(i).removeprefix("<think>\n"), True),
        (f"k is {i}, total {i}. q is 5, {i}+5={s}. So \\boxed{{{s}}}.", True),
        (f"k is {i}, total {i}. q is 5, {i}+5=", False),
    ][sample]


def test_teacher_sees_the_students_prompt_and_unclosed_chains_are_dropped(
    tmp_path, data_file, tiny_tokenizer, monkeypatch
):
    from chat_templates import R1_TEMPLATE, R1_TRAINING_TEMPLATE, model_with_template
    from transformers import AutoTokenizer

    model = model_with_template(tmp_path / "r1", tiny_tokenizer, R1_TEMPLATE)
    tok = AutoTokenizer.from_pretrained(model)
    fake = fake_teacher(monkeypatch, tok, r1_script)
    out = tmp_path / "ds"
    summary = build(*args(model, data_file, out, "--samples", "3", "--system-prompt", "Be brief.",
                         "--strategy", "shortest-correct,first-correct"))  # fmt: skip
    rows = list(datasets.load_from_disk(str(out)))
    assert len(rows) == 5
    # the teacher saw exactly the prompt the student is trained on: system prompt included
    trained = [
        tok(tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False)["input_ids"]
        for r in rows
    ]  # fmt: skip
    assert sorted(fake.prompts) == sorted(p for p in trained for _ in range(3))
    assert all(r["messages"][0] == {"role": "system", "content": "Be brief."} for r in rows)
    # the shorter chain that boxed its answer without closing the think block is no answer;
    # the kept chain starts with the "<think>\n" the prompt opened, so a training template
    # renders exactly the teacher's prompt followed by the chain as the teacher wrote it
    train_tok = AutoTokenizer.from_pretrained(model)
    train_tok.chat_template = R1_TRAINING_TEMPLATE
    for r in rows:
        i = int(r["id"][1:])
        s = (i + 5) % 10
        chain = f"k is {i}, total {i}. q is 5, {i}+5={s}.\n</think>\n\\boxed{{{s}}}"
        assert r["messages"][-1]["content"] == "<think>\n" + chain
        prompt = tok.apply_chat_template(
            r["messages"][:-1], add_generation_prompt=True, tokenize=False
        )
        assert prompt.endswith("<|assistant|><think>\n")
        assert (
            train_tok.apply_chat_template(r["messages"], tokenize=False)
            == prompt + chain + "<|end|>"
        )
    assert summary["dropped_samples"] == {"unclosed think block": 5, "truncated": 5}
    assert summary["prompt_opens_think"] == "yes"
    work = tmp_path / "ds.work"
    assert all(r["prompt_opens_think"] is True for r in read_jsonl(work / "samples.jsonl"))

    # the work folder is a valid --teacher: same dataset, the contract travels with the records
    again = build(*args(work, data_file, tmp_path / "again", "--system-prompt", "Be brief.",
                       "--strategy", "shortest-correct,first-correct"))  # fmt: skip
    assert [r["messages"] for r in datasets.load_from_disk(str(tmp_path / "again"))] == [
        r["messages"] for r in rows
    ]
    assert again["dropped_samples"] == summary["dropped_samples"]
    # overriding the contract (a template that did not open the block): the unclosed,
    # shorter chain is then a plain answer and shortest-correct keeps it
    plain = build(*args(work / "samples.jsonl", data_file, tmp_path / "plain", "--strategy",
                       "shortest-correct", "--prompt-opens-think", "no"))  # fmt: skip
    assert plain["dropped_samples"] == {"shortest-correct: not the shortest": 5, "truncated": 5}
    assert plain["prompt_opens_think"] == "no"
    first = datasets.load_from_disk(str(tmp_path / "plain"))[0]["messages"][-1]["content"]
    assert first.startswith("k is ") and "</think>" not in first


def test_torn_last_line_of_the_teacher_samples_is_repaired_on_resume(
    tmp_path, data_file, tiny_model_dir, tiny_tokenizer, monkeypatch
):
    fake = fake_teacher(monkeypatch, tiny_tokenizer, fail_after=8)
    out = tmp_path / "ds"
    cfg = args(tiny_model_dir, data_file, out, "--samples", "4", "--batch-size", "4")
    with pytest.raises(KeyboardInterrupt):
        build(*cfg)
    samples = tmp_path / "ds.work" / "samples.jsonl"
    assert len(samples.read_text().splitlines()) == 8
    with samples.open("a") as f:  # a crash in the middle of writing a record
        f.write('{"id": "p2", "sample": 0, "compl')
    fake.fail_after = None
    summary = build(*cfg)
    lines = samples.read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # every line is whole again
    assert sorted((r["id"], r["sample"]) for r in recs) == [
        (p["id"], k) for p in PROBLEMS for k in range(4)
    ]
    assert summary["skipped_records"] == {} and summary["examples"] == 5
    assert len(fake.prompts) == 20  # the 8 kept samples were not drawn again
