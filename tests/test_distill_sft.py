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
from distill.sft import loss_mode, parse_args, to_prompt_completion, train
from distill.sft_config import SFTRecipe
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


def recipe(student, data, out, **kw) -> SFTRecipe:
    base = dict(student=str(student), data=str(data), out=str(out), learning_rate=3e-3, max_steps=4,
                per_device_train_batch_size=2, save_steps=2, logging_steps=1, lr_scheduler_type="constant")  # fmt: skip
    base.update(kw)
    return SFTRecipe(**base)


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
    summary = train(recipe(tiny_model_dir, data_dir, out, work_dir=str(work)))
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
        train(recipe(tiny_model_dir, data_dir, tmp_path / "b", max_steps=6, work_dir=str(work)))
    capsys.readouterr()
    summary = train(
        recipe(
            tiny_model_dir, data_dir, tmp_path / "b", max_steps=6, work_dir=str(work), resume=True
        )
    )
    assert "checkpoint-4" in capsys.readouterr().out and summary["global_step"] == 6


def test_lora_merge_and_adapter(data_dir, tiny_model_dir, tmp_path):
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    out = tmp_path / "merged"
    train(
        recipe(
            tiny_model_dir,
            data_dir,
            out,
            lora=True,
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
    train(recipe(tiny_model_dir, data_dir, out2, lora=True))
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
    summary = train(recipe(student, data_dir, tmp_path / "out", max_steps=1))
    assert summary["loss_mode"] == "completion"


def test_bad_input(data_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ShortcotError, match="--merge-lora needs --lora"):
        train(recipe(tiny_model_dir, data_dir, tmp_path / "x", merge_lora=True))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(ShortcotError, match="no 'messages' column"):
        train(recipe(tiny_model_dir, bad, tmp_path / "y"))
    with pytest.raises(ShortcotError, match="does not exist"):
        train(recipe(tiny_model_dir, tmp_path / "missing", tmp_path / "z"))
    r, _ = parse_args(
        [
            "--student",
            "s",
            "--data",
            "d",
            "--out",
            "o",
            "--lora",
            "--no-assistant-only-loss",
            "lora_r=4",
        ]
    )
    assert r.lora and not r.assistant_only_loss and r.lora_r == 4 and r.student == "s"
    with pytest.raises(ShortcotError, match="unknown config key"):
        parse_args(["--student", "s", "lr=1"])
    for name in ("sft_testbed", "sft_r1_1.5b_lora"):  # the shipped recipes parse
        path = Path(__file__).parents[1] / "configs" / "distill" / f"{name}.yaml"
        r, _ = parse_args(["--config", str(path), "--data", "d", "--out", "o", "--max-steps", "3"])
        assert r.student and r.max_steps == 3
