"""Golden cases for the shared grader (evals.grading)."""

from __future__ import annotations

import pytest

from artifacts.errors import ShortcotError
from evals.grading import (
    NO_ANSWER,
    Grade,
    answer_part,
    boxed_answers,
    contract_grader,
    extract_boxed,
    get_grader,
    grade_completion,
    math_grade,
    prompt_opens_think,
    resolve_prompt_opens_think,
    split_think,
)


@pytest.mark.parametrize(
    "completion, reference, correct, answer",
    [
        # boxed answers after the think block
        (r"<think>12+7=19</think> The answer is \boxed{19}.", "19", True, "19"),
        (r"</think> \boxed{18}", "19", False, "18"),
        # the last box after </think> wins
        (r"</think> first \boxed{3}, finally \boxed{4}", "4", True, "4"),
        # nested braces
        (r"</think> \boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True, r"\frac{\sqrt{3}}{2}"),
        (r"</think> \boxed{x^{2}}", "x^2", True, "x^{2}"),
        # fractions vs decimals, both directions
        (r"</think> \boxed{\frac{1}{2}}", "0.5", True, r"\frac{1}{2}"),
        (r"</think> \boxed{0.5}", r"\frac{1}{2}", True, "0.5"),
        # LaTeX forms
        (r"</think> \boxed{\dfrac{1}{2}}", r"\frac12", True, r"\dfrac{1}{2}"),
        (r"</think> \boxed{2\sqrt{2}}", r"\sqrt{8}", True, r"2\sqrt{2}"),
        (r"</think> \boxed{2\sqrt{2}}", r"2\sqrt{3}", False, r"2\sqrt{2}"),
        (r"</think> \boxed{1,000}", "1000", True, "1,000"),
        (r"</think> \boxed{\text{(B)}}", "B", True, r"\text{(B)}"),
        # sets and intervals (math-verify handles them)
        (r"</think> \boxed{\{1,2,3\}}", r"\{3,2,1\}", True, r"\{1,2,3\}"),
        (r"</think> \boxed{(0, 1]}", "(0,1]", True, "(0, 1]"),
        (r"</think> \boxed{[0, 1)}", "(0,1]", False, "[0, 1)"),
        # no think block at all: the whole completion is the answer part
        (r"So the total is \boxed{5}", "5", True, "5"),
        # unbraced and spaced boxes (the DeepScaleR / Qwen2.5-Math graders accept both)
        (r"</think> The answer is $\boxed 5$.", "5", True, "5"),
        (r"</think> \boxed {5}", "5", True, "5"),
        (r"</think> \boxed 5", "6", False, "5"),
        # the last box wins, \boxed or \fbox
        (r"</think> \boxed{3} or rather \fbox{4}", "4", True, "4"),
        (r"</think> \fbox{3} or rather \boxed 4", "3", False, "4"),
    ],
)
def test_math_grade_golden(completion, reference, correct, answer):
    g = math_grade(completion, reference)
    assert g == Grade(correct=correct, answer=answer, formatted=True)


@pytest.mark.parametrize(
    "completion",
    [
        r"</think> the answer is 5",  # missing box
        r"<think> I am sure it is \boxed{5}",  # answer only inside an unclosed think block
        "<think> still thinking about 5 when the tokens ran ou",  # truncated output
        r"</think> \boxed{5",  # box cut off by the token limit
    ],
)
def test_math_grade_unformatted_is_wrong(completion):
    assert math_grade(completion, "5") == Grade(correct=False, answer=None, formatted=False)


def test_answer_inside_think_block_only_does_not_count():
    # the box before </think> is ignored, the answer part has none
    g = math_grade(r"<think>maybe \boxed{5}</think> I am not sure.", "5")
    assert g == Grade(False, None, False)
    g = math_grade(r"\boxed{3}</think> \boxed{4}", "3")
    assert g == Grade(False, "4", True)


@pytest.mark.parametrize(
    "text, answer",
    [
        (r"a \boxed{\frac{1}{2}} b \fbox{7}", "7"),  # the last box, whichever command
        (r"a \fbox{7} b \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\fbox{7}", "7"),
        (r"\boxed{ {a}{b} }", "{a}{b}"),
        (r"\boxed {5}", "5"),  # a space before the brace
        (r"\boxed  {x^{2}}", "x^{2}"),
        (r"\boxed 5", "5"),  # no braces: the argument runs to $ or the end of the line
        (r"so $\boxed 12$.", "12"),
        ("\\boxed 1/2\nnext line", "1/2"),
        (r"\fbox 7", "7"),
        (r"\boxed{3} and then \boxed 4", "4"),
        (r"\boxed 4 and then \boxed{3}", "3"),
        (r"\boxedanswer{5}", None),  # another command, not a box
        (r"\boxed{5", None),  # cut off
        (r"\boxed{3} then \boxed{5", None),  # the last box was cut off: no final answer
        (r"\boxed", None),
        ("nothing", None),
    ],
)
def test_extract_boxed_golden(text, answer):
    assert extract_boxed(text) == answer


def test_boxed_answers_lists_every_complete_box():
    assert boxed_answers(r"\boxed{1}, \fbox {2}, $\boxed 3$, \boxed{\frac{1}{2}}, \boxed{4") == [
        "1",
        "2",
        "3",
        r"\frac{1}{2}",
    ]


def test_extract_boxed_and_split_think():
    assert split_think("<think>a</think>b") == ("a", "b")
    assert split_think("a</think>b") == ("a", "b")
    assert split_think("<think>a") == ("a", "")
    assert split_think("plain") == (None, "plain")


def test_get_grader_by_name_and_module_function(tmp_path, monkeypatch):
    assert get_grader("math") is math_grade
    (tmp_path / "my_task_grader.py").write_text(
        "from evals.grading import Grade\n"
        "def grade(completion, reference):\n"
        "    return Grade(completion.strip() == reference, completion.strip(), True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    g = get_grader("my_task_grader:grade")
    assert g(" 42 ", "42") == Grade(True, "42", True)
    with pytest.raises(ShortcotError, match="cannot load grader"):
        get_grader("my_task_grader:nope")
    with pytest.raises(ShortcotError, match="unknown grader"):
        get_grader("nonsense")


# ------------------------------------------------------------------ the answer contract


@pytest.mark.parametrize(
    "completion, opened, part",
    [
        # the prompt opened the think block (DeepSeek-R1-Distill, QwQ)
        (r"12+7=19 </think> \boxed{19}", True, r" \boxed{19}"),
        (r"12+7=19, \boxed{19}", True, None),  # never closed: no answer at all
        ("", True, None),
        (r"a </think> b </think> \boxed{1}", True, r" \boxed{1}"),  # after the last tag
        # the prompt did not open it (the testbed; Qwen3: the model opens it, or thinking off)
        (r"<think>12+7=19</think> \boxed{19}", False, r" \boxed{19}"),
        (r"<think>12+7=19, \boxed{19}", False, None),  # opened by the completion, never closed
        (r"\boxed{19}", False, r"\boxed{19}"),  # no think block: all answer
        (r"12+7=19 </think> \boxed{19}", False, r" \boxed{19}"),
    ],
)
def test_answer_part_golden(completion, opened, part):
    assert answer_part(completion, opened) == part


def test_grade_completion_does_not_ask_the_grader_without_an_answer():
    asked = []

    def spy(completion, reference):
        asked.append(completion)
        return Grade(True, "x", True)

    assert grade_completion(spy, r"\boxed{19}", "19", prompt_opens_think=True) == NO_ANSWER
    assert asked == []
    assert grade_completion(spy, r"</think> \boxed{19}", "19", True) == Grade(True, "x", True)
    assert asked == [r"</think> \boxed{19}"]  # graders get the whole completion
    g = contract_grader(math_grade, True)
    assert g(r"12+7 is \boxed{19}", "19") == NO_ANSWER
    assert g(r"12+7 is 19 </think> \boxed{19}", "19") == Grade(True, "19", True)
    assert contract_grader(math_grade, False)(r"\boxed{19}", "19") == Grade(True, "19", True)


def test_prompt_opens_think_from_the_rendered_templates(tiny_tokenizer):
    """The three template families, rendered on the tiny tokenizer (tests/chat_templates.py)."""
    import copy

    from chat_templates import QWEN3_NO_THINK_TEMPLATE, QWEN3_TEMPLATE, R1_TEMPLATE

    def render_with(template, **kw):
        tok = copy.deepcopy(tiny_tokenizer)
        tok.chat_template = template
        return lambda m: tok.apply_chat_template(
            m, add_generation_prompt=True, tokenize=False, **kw
        )

    r1 = render_with(R1_TEMPLATE)
    probe = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    assert r1(probe).endswith("<|assistant|><think>\n")
    assert resolve_prompt_opens_think("auto", r1, probe) is True
    assert resolve_prompt_opens_think("auto", render_with(QWEN3_TEMPLATE)) is False
    off = render_with(QWEN3_TEMPLATE, enable_thinking=False)
    assert off([{"role": "user", "content": "x"}]).endswith("<think>\n\n</think>\n\n")
    assert resolve_prompt_opens_think("auto", off) is False
    assert resolve_prompt_opens_think("auto", render_with(QWEN3_NO_THINK_TEMPLATE)) is False
    assert resolve_prompt_opens_think("auto", render_with(tiny_tokenizer.chat_template)) is False
    # the flag overrides what the template says
    assert resolve_prompt_opens_think("no", r1) is False
    assert resolve_prompt_opens_think("yes", off) is True
    assert resolve_prompt_opens_think("auto", None) is False
    assert prompt_opens_think("<think>\n  \n") and not prompt_opens_think("</think>\n")
    with pytest.raises(ShortcotError, match="auto, yes or no"):
        resolve_prompt_opens_think("maybe", r1)


def test_doctests_of_the_grading_module():
    import doctest

    import evals.grading

    result = doctest.testmod(evals.grading)
    assert result.failed == 0 and result.attempted >= 8
