"""Golden cases for the shared grader (evals.grading)."""

from __future__ import annotations

import pytest

from artifacts.errors import ShortcotError
from evals.grading import Grade, extract_boxed, get_grader, math_grade, split_think


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


def test_extract_boxed_and_split_think():
    assert extract_boxed(r"a \boxed{\frac{1}{2}} b \fbox{7}") == r"\frac{1}{2}"  # \boxed preferred
    assert extract_boxed(r"\fbox{7}") == "7"
    assert extract_boxed(r"\boxed{ {a}{b} }") == "{a}{b}"
    assert extract_boxed("nothing") is None
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
