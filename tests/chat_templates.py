"""Chat templates written like the ones real reasoning models ship, on the tiny tokenizer,
and a scripted generation backend, for the answer-contract tests (issue 11).

- `R1_TEMPLATE`: DeepSeek-R1-Distill-Qwen's (and QwQ's) shape: the system prompt first,
  untagged; user and assistant turns; earlier assistant turns lose their thinking
  (``content.split('</think>')[-1]``); the generation prompt ends with ``<think>\\n``, so
  the model's completion starts inside the think block.
- `QWEN3_TEMPLATE`: Qwen3's shape: role-tagged turns; with thinking on (the default) the
  generation prompt is the bare assistant tag and the model writes ``<think>`` itself;
  with ``enable_thinking=False`` the prompt holds an empty closed block
  ``<think>\\n\\n</think>\\n\\n`` and the model answers at once.
- `QWEN3_NO_THINK_TEMPLATE`: the same, rendered as with ``enable_thinking=False``
  (for the commands that take no template arguments).

The role markers are the tiny tokenizer's own special tokens (``<|user|>``, ...), in place
of the real models' (``<｜User｜>``, ``<|im_start|>user``), which it does not have.
"""

from __future__ import annotations

from collections.abc import Callable

from evals.backends import Backend, Completion, Request, SamplingParams

R1_TEMPLATE = (
    "{% set ns = namespace(system_prompt='') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{% endif %}{% endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|assistant|>' + content + '<|end|>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|><think>\\n' }}{% endif %}"
)

# The training variant of R1_TEMPLATE, as TRL patches DeepSeek-R1-Distill's
# (trl/chat_templates/deepseek_r1_distill_training.jinja): the assistant turn is kept whole
# (no '</think>' split) inside {% generation %} markers.
R1_TRAINING_TEMPLATE = R1_TEMPLATE.replace(
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|assistant|>' + content + '<|end|>' }}",
    "{{ '<|assistant|>' }}{% generation %}{{ content + '<|end|>' }}{% endgeneration %}",
)
assert R1_TRAINING_TEMPLATE != R1_TEMPLATE

QWEN3_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}"
)

QWEN3_NO_THINK_TEMPLATE = "{% set enable_thinking = false %}" + QWEN3_TEMPLATE

TEMPLATES = {"r1": R1_TEMPLATE, "qwen3": QWEN3_TEMPLATE, "qwen3_no_think": QWEN3_NO_THINK_TEMPLATE}


def model_with_template(path, tokenizer, template: str):
    """A tiny random model folder at ``path`` whose tokenizer carries ``template``."""
    import copy

    from conftest import make_tiny_model_dir

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    make_tiny_model_dir(path, tok)
    return path


# script(prompt text, sample index) -> (completion text, ends with EOS)
Script = Callable[[str, int], tuple[str, bool]]


class ScriptedBackend(Backend):
    """A generation backend whose completions are scripted per prompt and sample index,
    on a real tokenizer (its chat template renders the prompts). Completions are cut at
    ``max_new_tokens`` like a real backend's: no EOS within the limit = truncated.
    ``prompts`` records every prompt (token ids) it was asked to continue."""

    name = "hf"

    def __init__(self, tokenizer, script: Script, fail_after: int | None = None):
        self.tokenizer = tokenizer
        self.eos_token_ids = {tokenizer.eos_token_id}
        self.script = script
        self.prompts: list[list[int]] = []
        self.fail_after = fail_after  # raise KeyboardInterrupt after this many requests

    def generate_requests(
        self, requests: list[Request], params: SamplingParams, progress: bool = True
    ) -> list[Completion]:
        out = []
        for r in requests:
            if self.fail_after is not None and len(self.prompts) >= self.fail_after:
                raise KeyboardInterrupt
            self.prompts.append(list(r.prompt_ids))
            text, eos = self.script(self.tokenizer.decode(r.prompt_ids), r.sample_index)
            ids = self.encode(text) + ([self.tokenizer.eos_token_id] if eos else [])
            ids = ids[: params.max_new_tokens]
            finished = bool(self.eos_token_ids.intersection(ids))
            out.append(Completion(self.decode(ids), ids, finished))
        return out
