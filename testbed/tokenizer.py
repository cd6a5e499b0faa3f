"""A small byte-level BPE tokenizer, trained locally with `tokenizers` and saved as the
standard HF files (tokenizer.json, tokenizer_config.json with a chat template).

Byte-level, so any text round-trips (prompts, LaTeX, the eval instruction); digits are
split one per token, as in Llama-3 / Qwen, so arithmetic is learnable by a tiny model.
``<think>`` and ``</think>`` are single added tokens, as in R1-style models.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
THINK_TOKENS = ["<think>", "</think>"]

# The {% generation %} markers let TRL's SFTTrainer compute the loss on the assistant turn
# only (assistant_only_loss=True); the template is otherwise a plain role-tagged format.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int = 512, space_digits: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` on ``corpus`` and wrap it for transformers.

    ``space_digits=True`` keeps a space with the digit after it (`` 7`` is one token, as
    in GPT-2's pre-tokenizer) while still splitting numbers one digit per token; the
    testbed uses it because its traces are mostly ``space digit`` pairs, which would
    otherwise cost two tokens each.
    """
    tok = Tokenizer(models.BPE())
    digit_split = (
        pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated")
        if space_digits
        else pre_tokenizers.Digits(individual_digits=True)
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [digit_split, pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    special = [BOS, EOS, PAD, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
    fast.add_tokens(THINK_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast
