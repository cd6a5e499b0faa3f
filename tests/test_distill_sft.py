"""distill.sft on the tiny model: the built dataset loads into TRL's SFTTrainer as is, only
assistant tokens carry loss, training changes the weights and lowers the loss on the
data, LoRA (+ merge), resume, the prompt/completion fallback, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from artifacts.errors import ShortcotError
from distill.dataset import load_rows, make_row, save_rows
from distill.sft import (
    loss_mode,
    mixed_precision,
    parse_args,
    to_prompt_completion,
    train,
    trainer_config,
)
from distill.sft_config import DistillArguments, DistillSFTConfig, StudentConfig
from evals.prompts import build_messages

COMPLETIONS = [
    "<think> 12 plus 7 is 19. </think> \\boxed{19}",
    "<think> 3 plus 5 is 8. </think> \\boxed{8}",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rows = [
        make_row(
            build_messages(f"What is {q}?"),
            c,
            problem_id=f"p{i}",
            answer=a,
            difficulty=1,
            original_tokens=20,
            compressed_tokens=10,
            mean_sample_tokens=20.0,
            sample=0,
            strategy="first-correct",
            teacher="t",
        )  # fmt: skip
        for i, (q, c, a) in enumerate(zip(["12 + 7", "3 + 5"], COMPLETIONS, ["19", "8"]))
    ]
    path = tmp_path_factory.mktemp("sftdata") / "ds"
    path.mkdir()
    save_rows(rows, path, "disk")
    return path


SCRIPT_KEYS = {"work_dir", "resume", "merge_lora", "force"}
MODEL_KEYS = {"use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "dtype"}


def recipe(student, data, out, **kw) -> tuple:
    """The three configs of distill.sft (its parse_args' types) for a short run."""
    base = dict(learning_rate=3e-3, max_steps=4, per_device_train_batch_size=2, save_steps=2,
                logging_steps=1, lr_scheduler_type="constant")  # fmt: skip
    base.update(kw)
    script = {k: base.pop(k) for k in list(base) if k in SCRIPT_KEYS}
    model = {k: base.pop(k) for k in list(base) if k in MODEL_KEYS}
    return (
        DistillArguments(data=str(data), **script),
        DistillSFTConfig(output_dir=str(out), **base),
        StudentConfig(model_name_or_path=str(student), **model),
    )


def assistant_nll(model_dir, tokenizer, messages) -> float:
    """Mean NLL of the assistant turn's tokens (computed here, independently of TRL)."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")
    return nll[len(p_ids) - 1 :].mean().item()


def test_dataset_loads_into_sfttrainer_with_assistant_only_mask(data_dir, tiny_model_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    ds = load_rows(data_dir)
    assert set(ds.column_names) >= {
        "messages",
        "id",
        "original_tokens",
        "compressed_tokens",
        "strategy",
        "teacher",
    }
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert loss_mode(tok) == "assistant"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    args = SFTConfig(
        output_dir=str(tmp_path / "o"),
        assistant_only_loss=True,
        report_to="none",
        max_steps=1,
        bf16=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for row, ids, labels in zip(ds, batch["input_ids"], batch["labels"]):
        trained = tok.decode([t for t, lab in zip(ids.tolist(), labels.tolist()) if lab != -100])
        # exactly the assistant content and its end-of-turn token carry loss
        assert trained == row["messages"][-1]["content"] + tok.eos_token


def test_full_sft_changes_weights_fits_the_data_and_resumes(
    data_dir, tiny_model_dir, tiny_tokenizer, tmp_path, capsys
):
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    out = tmp_path / "sft"
    work = tmp_path / "work"
    summary = train(*recipe(tiny_model_dir, data_dir, out, work_dir=str(work)))
    assert summary["global_step"] == 4 and summary["loss_mode"] == "assistant"
    after = load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert set(changed) == set(
        before
    )  # every tensor moved (embeddings included: rows of seen tokens)
    msgs = load_rows(data_dir)[0]["messages"]
    assert (
        assistant_nll(out, tiny_tokenizer, msgs)
        < assistant_nll(tiny_model_dir, tiny_tokenizer, msgs) - 0.5
    )
    card = (out / "README.md").read_text()
    assert f"`{data_dir.name}`" in card and '"learning_rate": 0.003' in card
    assert str(data_dir.parent) not in card and str(tiny_model_dir) not in card  # no local paths
    assert json.loads((out / "train_summary.json").read_text())["examples"] == 2
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == tiny_tokenizer.chat_template

    # resume: the work folder holds checkpoint-2 and checkpoint-4; a longer run continues
    assert (work / "checkpoint-4").exists()
    with pytest.raises(ShortcotError, match="pass --resume"):
        train(*recipe(tiny_model_dir, data_dir, tmp_path / "b", max_steps=6, work_dir=str(work)))
    capsys.readouterr()
    summary = train(
        *recipe(
            tiny_model_dir, data_dir, tmp_path / "b", max_steps=6, work_dir=str(work), resume=True
        )
    )
    assert "checkpoint-4" in capsys.readouterr().out and summary["global_step"] == 6


def test_lora_merge_and_adapter(data_dir, tiny_model_dir, tmp_path):
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    out = tmp_path / "merged"
    train(
        *recipe(
            tiny_model_dir,
            data_dir,
            out,
            use_peft=True,
            merge_lora=True,
            learning_rate=2e-2,
            lora_dropout=0.0,
        )
    )
    assert not (out / "adapter_config.json").exists()
    after = load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    for k in before:
        same = torch.equal(before[k], after[k])
        # LoRA touches the linear layers only; embeddings and norms stay as they were
        assert same == (not k.endswith("proj.weight")), k

    out2 = tmp_path / "adapter"
    train(*recipe(tiny_model_dir, data_dir, out2, use_peft=True))
    assert (out2 / "adapter_config.json").exists() and not (out2 / "model.safetensors").exists()


def test_prompt_completion_fallback(data_dir, tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    assert loss_mode(tok) == "completion"
    pc = to_prompt_completion(load_rows(data_dir))
    assert pc[0]["prompt"][-1]["role"] == "user" and pc[0]["completion"] == [
        {"role": "assistant", "content": COMPLETIONS[0]}
    ]
    student = tmp_path / "student"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).save_pretrained(str(student))
    tok.save_pretrained(str(student))
    summary = train(*recipe(student, data_dir, tmp_path / "out", max_steps=1))
    assert summary["loss_mode"] == "completion"


def test_bad_input(data_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ShortcotError, match="--merge_lora needs --use_peft"):
        train(*recipe(tiny_model_dir, data_dir, tmp_path / "x", merge_lora=True))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(ShortcotError, match="no 'messages' column"):
        train(*recipe(tiny_model_dir, bad, tmp_path / "y"))
    with pytest.raises(ShortcotError, match="does not exist"):
        train(*recipe(tiny_model_dir, tmp_path / "missing", tmp_path / "z"))
    with pytest.raises(ShortcotError, match="--push_to_hub needs --hub_model_id"):
        train(*recipe(tiny_model_dir, data_dir, tmp_path / "h", push_to_hub=True))
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z", "h"))


def test_cli_flags_and_recipes(tmp_path):
    base = ["--student", "s", "--data", "d", "--out", "o"]
    args, cfg, model = parse_args([*base, "--use_peft", "--no_assistant_only_loss", "--lora_r", "4",
                                   "--lora-target-modules", "q_proj", "v_proj", "--merge_lora"])  # fmt: skip
    assert model.use_peft and model.lora_r == 4 and model.model_name_or_path == "s"
    assert model.lora_target_modules == ["q_proj", "v_proj"] and args.merge_lora
    assert not cfg.assistant_only_loss and cfg.output_dir == "o" and args.data == "d"
    _, cfg, model = parse_args(
        [*base, "--assistant_only_loss", "false", "--model_name_or_path", "m"]
    )
    assert not cfg.assistant_only_loss and model.model_name_or_path == "m"
    _, cfg, model = parse_args(base)  # today's defaults
    assert (cfg.learning_rate, cfg.num_train_epochs, cfg.seed, cfg.max_length) == (
        1e-5,
        2.0,
        0,
        4096,
    )
    assert (cfg.save_steps, cfg.save_total_limit, cfg.report_to, cfg.assistant_only_loss) == (
        200,
        2,
        [],
        True,
    )
    assert not cfg.gradient_checkpointing and cfg.auto_bf16 and model.dtype is None
    assert (model.use_peft, model.lora_r, model.lora_alpha, model.lora_dropout) == (
        False,
        16,
        32,
        0.05,
    )
    assert model.lora_target_modules == "all-linear"
    with pytest.raises(ShortcotError, match="unrecognized argument.*lr=1"):
        parse_args([*base, "lr=1"])
    with pytest.raises(ShortcotError, match="required: --output_dir/--output-dir/--out"):
        parse_args(["--student", "s", "--data", "d"])
    (tmp_path / "r.yaml").write_text("model_name_or_path: s\ndata: d\noutput_dir: o\nlr_r: 4\n")
    with pytest.raises(ShortcotError, match="unknown key\\(s\\) lr_r \\(did you mean lora_r"):
        parse_args(["--config", str(tmp_path / "r.yaml")])


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs" / "distill").glob("sft_*.yaml"))
)
def test_shipped_sft_recipes_parse(path):
    args, cfg, model = parse_args(
        ["--config", str(path), "--data", "d", "--out", "o", "--max-steps", "3"]
    )
    assert model.model_name_or_path and cfg.max_steps == 3 and cfg.output_dir == "o"
    assert not cfg.push_to_hub


def test_trainer_gets_the_recipe_with_the_work_folder(tmp_path):
    """What SFTTrainer is given for the testbed recipe: the SFTConfig distill.sft built
    field by field before it parsed TRL's own config (the same numbers, key for key)."""
    from trl import SFTConfig

    path = Path(__file__).parents[1] / "configs" / "distill" / "sft_testbed.yaml"
    _, cfg, model = parse_args(["--config", str(path), "--data", "d", "--out", str(tmp_path / "o")])
    work = tmp_path / "o.work"
    got = trainer_config(cfg, model, work, "assistant")
    expected = SFTConfig(
        output_dir=str(work), learning_rate=3e-4, num_train_epochs=2.0, max_steps=-1,
        per_device_train_batch_size=16, gradient_accumulation_steps=1, warmup_steps=0.05,
        lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, max_length=512, seed=0,
        gradient_checkpointing=False, assistant_only_loss=True, completion_only_loss=False,
        save_strategy="steps", save_steps=100, save_total_limit=2, logging_steps=10,
        report_to="none", fp16=False,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )  # fmt: skip
    assert type(got) is SFTConfig and got.to_dict() == expected.to_dict()
    assert not got.push_to_hub and got.hub_model_id is None


def test_mixed_precision_follows_the_student_dtype(monkeypatch):
    """bf16 left unset: on for a bfloat16 student, and with no dtype where the GPU supports
    it (as before TRL's config was parsed); given: as given."""
    base = ["--student", "s", "--data", "d", "--out", "o"]
    auto, off = parse_args(base)[1], parse_args([*base, "--bf16", "false"])[1]
    assert mixed_precision(auto, None) == (False, False)  # CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision(auto, None) == (True, False)
    assert mixed_precision(auto, "float32") == (False, False)
    assert mixed_precision(auto, "bfloat16") == (True, False)
    assert mixed_precision(auto, "float16") == (False, True)
    assert mixed_precision(off, None) == (False, False)
