"""Prompt formatting shared by evaluation, RL training and dataset building.

The default instruction is the one DLER trains and evaluates with (docs/algorithms.md
§5.4: the DeepSeek-R1 template + "Let's think step by step and output the final
answer within \\boxed{}."). The CPU testbed model is trained on exactly this format, so
the same defaults work on it and on real reasoning models.
"""

from __future__ import annotations

DEFAULT_PROMPT_TEMPLATE = (
    "{problem}\nLet's think step by step and output the final answer within \\boxed{{}}."
)


def format_problem(problem: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """Insert ``problem`` into ``template`` (which must contain ``{problem}``)."""
    return template.format(problem=problem)


def build_messages(
    problem: str, template: str = DEFAULT_PROMPT_TEMPLATE, system: str | None = None
) -> list[dict]:
    """The chat messages of one problem: an optional system turn and the user turn."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": format_problem(problem, template)})
    return msgs
