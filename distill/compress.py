"""The compress step of `distill.build`: raw traces -> kept chains and the reasons for
every drop (docs/algorithms.md §4).

`run_pipeline` does one problem: it grades the raw samples (only verified-correct,
finished, well-formatted traces enter: the answer contract, the rule every strategy
shares), applies the strategies of `distill.strategies` in the order given
(`parse_pipeline`, `make_strategy`), and re-verifies what comes out. `compress` does every
problem of the sample step's `distill.teacher.Samples`: it counts tokens, grades,
compresses, and returns the chat-format rows (`distill.dataset.make_row`) and the summary
of what was kept and dropped (`Compressed`, plain data for the save step).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tqdm.auto import tqdm

from artifacts.cli import arg
from artifacts.errors import ShortcotError
from distill.answers import bind_detector, get_detector
from distill.dataset import make_row, summarize
from distill.strategies import (
    Context,
    Strategy,
    Trace,
    any_correct,
    first_correct,
    shortest_correct,
    step_prune,
)
from distill.teacher import RawTrace
from evals.grading import (
    PROBE_PROBLEM,
    THINK_OPEN,
    answer_part,
    get_grader,
    resolve_prompt_opens_think,
    think_opening,
)
from evals.prompts import build_messages

if TYPE_CHECKING:
    from distill.build_config import BuildConfig
    from distill.teacher import Samples

# ---------------------------------------------------------------------------- one problem

STRATEGIES = ("shortest-correct", "first-correct", "step-prune", "any-correct")


@dataclass
class StrategyOptions:
    """Options of the strategies (flags and recipe keys of `distill.build`)."""

    max_ratio_to_median: float | None = arg(
        None,
        "shortest-correct: drop a problem unless its shortest correct chain is <= this x its "
        "median correct length",
    )
    keep_verification: bool = arg(
        False,
        "first-correct: keep one verification round after the first correct solution "
        "(FCS+Reflection)",
    )
    on_fail: Literal["keep", "drop"] = arg(
        "keep",
        "first-correct: when the cut trace fails re-verification, keep the uncut (verified) "
        "trace or drop it",
    )
    prune_threshold: float = arg(
        0.02,
        "step-prune perplexity: drop a step whose removal raises perplexity by less than this "
        "fraction",
    )
    prune_max_drop_fraction: float = arg(1.0, "step-prune: drop at most this fraction of the steps")

    def validate(self) -> None:
        if self.max_ratio_to_median is not None and self.max_ratio_to_median <= 0:
            raise ShortcotError(
                f"--max-ratio-to-median must be > 0, got {self.max_ratio_to_median}"
            )
        if not 0 <= self.prune_max_drop_fraction <= 1:
            raise ShortcotError(
                f"--prune-max-drop-fraction must be in [0, 1], got {self.prune_max_drop_fraction}"
            )


def parse_pipeline(spec: str | Sequence[str]) -> list[str]:
    """``"shortest-correct,first-correct"`` -> ``["shortest-correct", "first-correct"]``."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ShortcotError(
            f"--strategy is empty; use one or more of {', '.join(STRATEGIES)}, comma-separated"
        )
    for n in names:
        if n not in STRATEGIES:
            raise ShortcotError(
                f"unknown strategy {n!r}; use one or more of {', '.join(STRATEGIES)}, comma-separated"
            )
    return names


def make_strategy(name: str, opts: StrategyOptions, scorer=None) -> Strategy:
    if name == "shortest-correct":
        return lambda ts, ctx: shortest_correct(ts, ctx, opts.max_ratio_to_median)
    if name == "any-correct":
        return any_correct
    if name == "first-correct":
        return lambda ts, ctx: first_correct(ts, ctx, opts.keep_verification, opts.on_fail)
    if name == "step-prune":
        return lambda ts, ctx: step_prune(
            ts, ctx, scorer, opts.prune_threshold, opts.prune_max_drop_fraction
        )
    raise ShortcotError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def verify_trace(t: Trace, ctx: Context) -> str | None:
    """Why a raw trace cannot enter the pipeline, or None when it can. A trace whose think
    block (opened by the teacher's prompt or by the trace) is never closed has no answer
    (the answer contract), whatever it boxed while thinking."""
    if not t.finished:
        return "truncated"
    if answer_part(t.text, ctx.prompt_opens_think) is None:
        return "unclosed think block"
    g = ctx.verdict(t.text)
    if not g.formatted:
        return "unformatted"
    if getattr(g, "ungradable", False):
        return "ungradable"
    if not g.correct:
        return "incorrect"
    return None


@dataclass
class ProblemResult:
    kept: list[Trace]
    sample_drops: list[str]
    notes: list[str]
    problem_drop: str | None  # why the problem yields no example, None when it does
    correct_tokens: list[int] = field(
        default_factory=list
    )  # lengths of the traces that graded correct


def run_pipeline(
    traces: Sequence[Trace], ctx: Context, strategies: Sequence[tuple[str, Strategy]]
) -> ProblemResult:
    """Grade the raw traces, apply ``strategies`` in order, re-verify the survivors."""
    drops: list[str] = []
    notes: list[str] = []
    kept: list[Trace] = []
    for t in traces:
        why = verify_trace(t, ctx)
        if why:
            drops.append(why)
        else:
            kept.append(t)
    correct = [t.num_tokens for t in kept]
    if not kept:
        return ProblemResult([], drops, notes, "no correct sample")
    for name, strategy in strategies:
        res = strategy(list(kept), ctx)
        drops += res.dropped
        notes += res.notes
        kept = res.kept
        if not kept:
            why = res.dropped[0] if res.dropped else f"{name}: nothing kept"
            return ProblemResult([], drops, notes, why, correct)
    final = []
    for t in kept:
        if ctx.grade(t.text):
            final.append(t)
        else:
            drops.append("failed final re-verification")
    return ProblemResult(
        final, drops, notes, None if final else "failed final re-verification", correct
    )


# ---------------------------------------------------------------------------- every problem


@dataclass
class Compressed:
    """What the compress step hands to the save step: the dataset's rows and its summary
    (kept and dropped counts with their reasons, token statistics)."""

    rows: list[dict]
    summary: dict


def _token_counter(tokenizer):
    if tokenizer is None:
        # No tokenizer (traces without a model): whitespace words, stated in the summary.
        return lambda text: len(text.split())
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    from artifacts.hub import resolve_local

    try:
        return AutoTokenizer.from_pretrained(str(resolve_local(path)))
    except (OSError, ValueError) as err:
        raise ShortcotError(
            f"cannot load a tokenizer from {path} ({err}); pass --tokenizer MODEL"
        ) from err


def traces_open_think(setting: str, group: Sequence[RawTrace], fallback: bool) -> bool:
    """Whether the prompt of one problem's traces opened the think block (the answer
    contract): ``--prompt-opens-think`` yes / no as given; auto: what the records say
    (evals.run, and so the teacher's work folder, writes it), else ``fallback``."""
    if setting != "auto":
        return setting == "yes"
    said = [t.prompt_opens_think for t in group if t.prompt_opens_think is not None]
    return said[-1] if said else fallback


def template_think(cfg: BuildConfig, tokenizer) -> tuple[bool, str]:
    """What ``tokenizer``'s chat template says (no template: nothing): whether its
    generation prompt opens the think block (``--prompt-opens-think auto`` for traces that
    do not say, `evals.grading.resolve_prompt_opens_think`), and the text that opens it
    (`evals.grading.think_opening`; default ``"<think>\\n"``, R1-Distill's and QwQ's)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return False, THINK_OPEN + "\n"
    probe = build_messages(PROBE_PROBLEM, cfg.prompt_template, cfg.system_prompt)
    prompt = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    opened = resolve_prompt_opens_think(cfg.prompt_opens_think, lambda m: prompt)
    return opened, think_opening(prompt) or THINK_OPEN + "\n"


def compress(cfg: BuildConfig, options: StrategyOptions, samples: Samples) -> Compressed:
    """Grade and compress every problem's traces with the strategies of ``cfg.strategy``."""
    pipeline = parse_pipeline(cfg.strategy)
    grader = get_grader(cfg.grader)
    detector = get_detector(cfg.detector)
    problems, raw, unparsable = samples.problems, samples.traces, samples.unparsable
    tokenizer = _load_tokenizer(samples.tokenizer) if samples.tokenizer else None
    count = _token_counter(tokenizer)
    fallback_opens_think, opening = template_think(cfg, tokenizer)

    scorer = None
    if "step-prune" in pipeline and cfg.prune_scorer == "perplexity":
        from distill.perplexity import PerplexityScorer

        ppl_model = cfg.prune_model or (None if samples.from_traces else cfg.teacher)
        if ppl_model is None:
            raise ShortcotError(
                "--prune-scorer perplexity needs --prune-model MODEL when --teacher is a trace file"
            )
        from artifacts.hub import resolve_local

        scorer = PerplexityScorer.from_pretrained(str(resolve_local(ppl_model)), device=cfg.device)
    strategies = [(n, make_strategy(n, options, scorer)) for n in pipeline]

    rows: list[dict] = []
    problem_drops, sample_drops, notes = Counter(), Counter(), Counter()
    all_lens, correct_lens = [], []
    opened_problems = 0
    strategy_name = ",".join(pipeline)
    for pid, group in tqdm(raw.items(), desc="compressing", unit="problem"):
        info = problems[pid]
        prompt = build_messages(info.problem, cfg.prompt_template, cfg.system_prompt)
        opened = traces_open_think(cfg.prompt_opens_think, group, fallback_opens_think)
        opened_problems += opened
        ctx = Context(
            info.answer, grader, count, bind_detector(detector, info.problem), prompt=prompt,
            prompt_opens_think=opened,
        )  # fmt: skip
        traces = []
        for t in group:
            n = count(t.completion)
            traces.append(Trace(t.completion, n, n, t.finished, t.sample))
            all_lens.append(n)
        try:
            res = run_pipeline(traces, ctx, strategies)
        except Exception as err:  # a grader or detector choking on one record is not fatal
            problem_drops[f"ungradable: {type(err).__name__}"] += 1
            continue
        correct_lens += res.correct_tokens
        sample_drops.update(res.sample_drops)
        notes.update(res.notes)
        if res.problem_drop:
            problem_drops[res.problem_drop] += 1
        mean_sample = statistics.fmean(t.num_tokens for t in traces)
        for t in res.kept:
            # Where the prompt opened the think block, the chain starts with the text that
            # opened it, so the student trains on the very sequence the teacher generated
            # (training templates render the assistant turn after a bare assistant tag);
            # token counts stay those of the teacher's completion.
            text = (opening if opened else "") + t.text
            rows.append(
                make_row(
                    prompt, text, problem_id=pid, answer=info.answer, difficulty=info.difficulty,
                    original_tokens=t.original_tokens, compressed_tokens=t.num_tokens,
                    mean_sample_tokens=mean_sample, sample=t.sample, strategy=strategy_name, teacher=cfg.teacher,
                )
            )  # fmt: skip
    summary = summarize(
        rows, len(raw), problem_drops, sample_drops, notes, unparsable,
        n_samples=len(all_lens),
        mean_tokens_all=statistics.fmean(all_lens) if all_lens else None,
        mean_tokens_correct=statistics.fmean(correct_lens) if correct_lens else None,
    )  # fmt: skip
    summary["token_unit"] = (
        "tokens" if tokenizer is not None else "whitespace words (no --tokenizer)"
    )
    summary["strategy"] = strategy_name
    summary["prompt_opens_think"] = (
        "yes" if raw and opened_problems == len(raw) else "no" if not opened_problems
        else f"{opened_problems} of {len(raw)} problems"
    )  # fmt: skip
    return Compressed(rows, summary)
