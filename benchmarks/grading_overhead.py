"""What the bounded grader (`evals.verify`) costs per call on normal answers.

    python benchmarks/grading_overhead.py [--pairs 300] [--repeats 3]

Normal answers: equivalent and different forms of fractions, decimals, roots, powers,
intervals, sets, multiples of pi and plain integers, 16 answers per reference (as in an
evaluation with 16 samples). Compared on the same pairs, interleaved, median of
``--repeats`` passes, each after one warm-up pass:

* ``in-process``: math-verify called directly (the grader before the bound, no time limit);
* ``bounded``: `evals.verify.check_answer` (pre-check, then the worker process);
* ``precheck``: the pre-check alone;
* ``round trip``: a worker call whose answer math-verify rejects at once (empty), i.e.
  the pipe round trip plus the worker's loop.

Identical strings are left out: both paths return them without parsing.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from artifacts.cli import arg  # noqa: E402
from artifacts.cli import parse_args as parse_cli  # noqa: E402
from artifacts.errors import run_cli  # noqa: E402


def pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        a, b = rng.randint(1, 40), rng.randint(2, 40)
        k = rng.randint(2, 30)
        ref, forms = rng.choice(
            [
                (f"\\frac{{{a}}}{{{b}}}", [f"{a / b:.6g}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"]),
                (
                    f"{k}\\sqrt{{2}}",
                    [f"\\sqrt{{{2 * k * k}}}", f"{k}\\sqrt2", f"{k + 1}\\sqrt{{2}}"],
                ),
                (f"2^{{{k}}}", [str(2**k), f"2^{k}", str(2**k + 1)]),
                (
                    f"({a}, {a + b}]",
                    [f"({a},{a + b}]", f"[{a}, {a + b}]", f"\\left({a}, {a + b}\\right]"],
                ),
                (f"\\{{{a},{b}\\}}", [f"\\{{{b},{a}\\}}", f"\\{{{a}, {b}, {k}\\}}"]),
                (f"{k}\\pi", [f"\\pi \\cdot {k}", f"{k}*\\pi", f"{k + 1}\\pi"]),
                (str(a * b), [f"{a * b}.0", f"{a}\\cdot{b}", str(a * b + 1), f"{a * b:,}"]),
            ]
        )
        for _ in range(16):
            answer = rng.choice(forms)
            if answer.replace(" ", "") != ref.replace(" ", ""):
                out.append((answer, ref))
    return out[:n]


def in_process(answer: str, reference: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        gold = parse(f"${reference}$", extraction_config=configs, parsing_timeout=None)
        pred = parse(f"${answer}$", extraction_config=configs, parsing_timeout=None)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    except Exception:
        return False


def timed(fn, items) -> float:
    t = time.perf_counter()
    for a, r in items:
        fn(a, r)
    return (time.perf_counter() - t) / len(items)


@dataclass
class GradingOverheadArguments:
    """The benchmark's settings."""

    pairs: int = arg(300, "(answer, reference) pairs to grade")
    repeats: int = arg(3, "interleaved passes; the figure is their median")


def parse_args(argv: Sequence[str] | None = None) -> tuple[GradingOverheadArguments]:
    """``--config recipe.yaml`` and ``--flags`` into the settings; see ``--help``."""
    return parse_cli(
        [GradingOverheadArguments],
        argv,
        prog="benchmarks.grading_overhead",
        description=__doc__.splitlines()[0],
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    logging.disable(logging.CRITICAL)
    from evals.verify import _worker, check_answer, precheck, timeout

    items = pairs(args.pairs)
    agree = sum(in_process(a, r) == check_answer(a, r) for a, r in items)  # also warms up
    runs: dict[str, list[float]] = {"in-process": [], "bounded": [], "precheck": [], "rt": []}
    for _ in range(args.repeats):
        runs["in-process"].append(timed(in_process, items))
        runs["bounded"].append(timed(check_answer, items))
        runs["precheck"].append(timed(lambda a, r: precheck(a), items))
        runs["rt"].append(timed(lambda a, r: _worker.check("", r, timeout()), items))
    med = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    result = {
        "pairs": len(items),
        "verdicts_agree": f"{agree}/{len(items)}",
        "ms_per_call_in_process": round(med["in-process"], 3),
        "ms_per_call_bounded": round(med["bounded"], 3),
        "ms_overhead": round(med["bounded"] - med["in-process"], 3),
        "overhead_pct": round(100 * (med["bounded"] / med["in-process"] - 1), 1),
        "us_precheck": round(med["precheck"] * 1e3, 2),
        "ms_round_trip": round(med["rt"], 3),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(main)
