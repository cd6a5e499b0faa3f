"""Build a compressed-CoT dataset: ``python -m distill.build --teacher M --data D --out DIR``.

    # sample 8 chains per problem from a model, keep the shortest correct, cut it at its
    # first correct solution (keeping one verification), save as a datasets folder
    python -m distill.build --teacher runs/testbed/model --data runs/testbed/data/train.jsonl \\
        --grader testbed --samples 8 --strategy shortest-correct,first-correct \\
        --keep-verification --out runs/distill/data

    # compress traces that already exist (a JSONL of id/problem/answer/completion records,
    # e.g. the work folder's samples.jsonl or evals.run's samples.jsonl)
    python -m distill.build --teacher runs/distill/data.work/samples.jsonl \\
        --strategy step-prune --format jsonl --out runs/distill/pruned

The flow (docs/algorithms.md §4): sample (or read) N traces per problem; grade them with
the shared grader under the answer contract (only finished, formatted, correct traces
enter; a trace that never closes its think block has no answer); apply the strategies of
`distill.strategies` in the order given; re-verify; write the chat-format dataset, its
card and ``summary.json`` / ``summary.md``. The teacher is sampled by the evaluation's
engine (`evals.run.evaluate`, see `distill.teacher`) into ``--work-dir``, an ``evals.run``
folder that resumes; records that cannot be parsed or graded are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from artifacts.cards import public_ref, write_dataset_card
from artifacts.config import read_yaml_mapping
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_output_dir, check_output
from distill.answers import bind_detector, get_detector
from distill.dataset import FORMATS, make_row, save_rows, summarize, summary_markdown
from distill.strategies import (
    STRATEGIES,
    Context,
    StrategyOptions,
    Trace,
    make_strategy,
    parse_pipeline,
    run_pipeline,
)
from distill.teacher import (
    ProblemInfo,
    RawTrace,
    dedupe_samples,
    is_trace_source,
    read_traces,
    sample_teacher,
)
from evals.backends import EngineOptions, add_engine_arguments
from evals.grading import (
    PROBE_PROBLEM,
    PROMPT_OPENS_THINK,
    THINK_OPEN,
    get_grader,
    resolve_prompt_opens_think,
    think_opening,
)
from evals.prompts import DEFAULT_PROMPT_TEMPLATE, build_messages


@dataclass
class BuildConfig:
    """Everything `build` needs; the CLI flags map one to one onto these fields."""

    teacher: str
    out: str
    data: str | None = None
    strategy: str = "shortest-correct"
    format: str = "disk"
    grader: str = "math"
    detector: str = "math"
    # sampling (model teacher)
    backend: str = "hf"
    samples: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 4096
    seed: int = 0
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    work_dir: str | None = None
    # vllm over several GPUs (evals.backends.EngineOptions)
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    # data
    split: str | None = None
    limit: int | None = None
    problem_column: str = "problem"
    answer_column: str = "answer"
    id_column: str | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    system_prompt: str | None = None
    prompt_opens_think: str = "auto"  # auto | yes | no (the answer contract)
    tokenizer: str | None = None
    # strategies
    options: StrategyOptions = field(default_factory=StrategyOptions)
    prune_scorer: str = "rules"
    prune_model: str | None = None
    # output
    force: bool = False
    push_to_hub: str | None = None
    private: bool = False


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


def teacher_eval_config(cfg: BuildConfig, work_dir: Path):
    """The `evals.run.EvalConfig` that samples a model teacher into ``work_dir``: the same
    problems, prompt (template and system prompt), sampling settings, grader and answer
    contract as the build, and the vLLM engine options (`evals.backends.EngineOptions`)."""
    import dataclasses

    from evals.run import EvalConfig

    engine = dataclasses.asdict(EngineOptions.from_config(cfg))
    return EvalConfig(
        model=cfg.teacher,
        data=cfg.data,
        out=str(work_dir),
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        split=cfg.split,
        limit=cfg.limit,
        grader=cfg.grader,
        prompt_template=cfg.prompt_template,
        system_prompt=cfg.system_prompt,
        samples=cfg.samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        prompt_opens_think=cfg.prompt_opens_think,
        **engine,
    )


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


def load_problem_infos(cfg: BuildConfig) -> dict[str, ProblemInfo]:
    from evals.data import load_problems

    probs = load_problems(
        cfg.data,
        problem_column=cfg.problem_column,
        answer_column=cfg.answer_column,
        id_column=cfg.id_column,
        split=cfg.split,
        limit=cfg.limit,
    )
    return {p.id: ProblemInfo(p.id, p.problem, p.answer, p.difficulty) for p in probs}


def build(cfg: BuildConfig) -> dict:
    """Run the whole build; returns the summary (also written to ``out/summary.json``)."""
    pipeline = parse_pipeline(cfg.strategy)
    if cfg.format not in FORMATS:
        raise ShortcotError(f"unknown --format {cfg.format!r}; use one of {', '.join(FORMATS)}")
    if cfg.prune_scorer not in ("rules", "perplexity"):
        raise ShortcotError(f"unknown --prune-scorer {cfg.prune_scorer!r}; use rules or perplexity")
    if cfg.prompt_opens_think not in PROMPT_OPENS_THINK:
        raise ShortcotError(
            f"--prompt-opens-think must be auto, yes or no, got {cfg.prompt_opens_think!r}"
        )
    check_output(cfg.out, cfg.force)  # fail before hours of sampling, not after
    EngineOptions.from_config(cfg).validate(cfg.backend)
    grader = get_grader(cfg.grader)
    detector = get_detector(cfg.detector)
    teacher_path = Path(cfg.teacher).expanduser()
    if teacher_path.suffix == ".jsonl" and not teacher_path.exists():
        raise ShortcotError(f"trace file {teacher_path} does not exist; check the --teacher path")
    from_traces = teacher_path.exists() and is_trace_source(teacher_path)

    problems = load_problem_infos(cfg) if cfg.data else None
    tokenizer = None
    if from_traces:
        if cfg.tokenizer:
            tokenizer = _load_tokenizer(cfg.tokenizer)
        work_dir = None
        problems, raw, unparsable = read_traces(teacher_path, problems)
        if cfg.limit is not None and not cfg.data:
            keep = list(raw)[: cfg.limit]
            raw = {k: raw[k] for k in keep}
    else:
        if problems is None:
            raise ShortcotError(
                "--data is required when --teacher is a model; pass a problems file or preset"
            )
        work_dir = Path(cfg.work_dir or f"{cfg.out.rstrip('/')}.work")
        samples_path = sample_teacher(teacher_eval_config(cfg, work_dir))
        tokenizer = _load_tokenizer(cfg.tokenizer or cfg.teacher)
        wanted = set(problems)
        problems, raw, unparsable = read_traces(samples_path, problems)
        raw = {k: v for k, v in raw.items() if k in wanted}
    raw = dedupe_samples(raw)
    count = _token_counter(tokenizer)
    fallback_opens_think, opening = template_think(cfg, tokenizer)

    scorer = None
    if "step-prune" in pipeline and cfg.prune_scorer == "perplexity":
        from distill.perplexity import PerplexityScorer

        ppl_model = cfg.prune_model or (None if from_traces else cfg.teacher)
        if ppl_model is None:
            raise ShortcotError(
                "--prune-scorer perplexity needs --prune-model MODEL when --teacher is a trace file"
            )
        from artifacts.hub import resolve_local

        scorer = PerplexityScorer.from_pretrained(str(resolve_local(ppl_model)), device=cfg.device)
    strategies = [(n, make_strategy(n, cfg.options, scorer)) for n in pipeline]

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
    table = summary_markdown(summary)
    print(table)
    recipe = asdict(cfg)
    recipe.pop("force")
    with atomic_output_dir(cfg.out, force=cfg.force) as tmp:
        save_rows(rows, tmp, cfg.format)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        (tmp / "summary.md").write_text(table + "\n")
        (tmp / "build_config.json").write_text(json.dumps(recipe, indent=2, default=str))
        write_dataset_card(
            tmp,
            title=f"Compressed reasoning chains ({strategy_name})",
            summary=(
                f"{len(rows)} verified-correct reasoning chains from `{public_ref(cfg.teacher)}`, compressed with "
                f"`{strategy_name}` (shortcot `distill.build`). Chat format (`messages`), ready for TRL's "
                "SFTTrainer; per-example original and compressed token counts are columns."
            ),
            recipe=recipe,
            stats_table=table,
            source_models=[cfg.teacher],
        )
    if work_dir is not None:
        print(f"raw samples kept in {work_dir / 'samples.jsonl'} (reusable as --teacher)")
    print(f"wrote {len(rows)} examples to {cfg.out}")
    if cfg.push_to_hub:
        from artifacts.hub import push_folder

        url = push_folder(cfg.out, cfg.push_to_hub, private=cfg.private, repo_type="dataset")
        print(f"pushed to {url}")
    return summary


def _read_yaml(path: str) -> dict:
    return read_yaml_mapping(path, "configs/distill/")


def parse_args(argv: Sequence[str] | None) -> BuildConfig:
    d = BuildConfig(teacher="", out="")
    o = StrategyOptions()
    p = argparse.ArgumentParser(
        prog="python -m distill.build",
        description="Build a compressed chain-of-thought dataset (chat format, for SFT) from a teacher "
        "model's samples or from existing traces.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a(
        "--config",
        help="YAML file of flag values (keys = flag names with underscores, e.g. max_new_tokens: 512); "
        "flags given on the command line win",
    )
    a(
        "--teacher",
        help="model folder / Hub id to sample from, or a JSONL file (or folder of "
        "*.jsonl) of existing traces with id, completion and (unless --data is given) problem and answer fields",
    )
    a(
        "--data",
        help="problems (contract 3): .jsonl/.parquet, a datasets folder, or a preset such as math500; "
        "required for a model teacher, optional for traces (joined by id for missing problem/answer)",
    )
    a("--out", help="output folder for the dataset, its card and summary")
    a(
        "--strategy",
        default=d.strategy,
        help=f"comma-separated pipeline, applied in order, of: {', '.join(STRATEGIES)}",
    )
    a(
        "--format",
        default=d.format,
        choices=FORMATS,
        help="disk = datasets.save_to_disk folder; jsonl / parquet = "
        "data.jsonl / data.parquet in the output folder",
    )
    a("--grader", default=d.grader, help="grader name (math, testbed) or module:function")
    a(
        "--detector",
        default=d.detector,
        help="answer detector for steps of the trace (math, last-number, "
        "module:function); used by first-correct and step-prune",
    )
    g = p.add_argument_group("sampling (when --teacher is a model)")
    g.add_argument(
        "--backend", default=d.backend, choices=["hf", "vllm"], help="generation backend"
    )
    g.add_argument("--samples", type=int, default=d.samples, help="chains sampled per problem (N)")
    g.add_argument(
        "--temperature", type=float, default=d.temperature, help="sampling temperature (0 = greedy)"
    )
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling top_p")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=d.max_new_tokens,
        help="generation cap; a chain that hits it is truncated and never kept",
    )
    g.add_argument(
        "--seed", type=int, default=d.seed, help="sampling seed (per sample, so resuming is exact)"
    )
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="sequences per generation batch"
    )
    g.add_argument(
        "--device", default=d.device, help="torch device (default: cuda if available, else cpu)"
    )
    g.add_argument(
        "--dtype", default=d.dtype, help="model dtype, e.g. bfloat16 (default: backend's choice)"
    )
    g.add_argument(
        "--work-dir",
        default=d.work_dir,
        help="where the teacher's samples are written, an evals.run folder that resumes "
        "(default: OUT.work)",
    )
    add_engine_arguments(g)
    g = p.add_argument_group("data")
    g.add_argument("--split", default=d.split, help="split of a datasets folder or Hub dataset")
    g.add_argument("--limit", type=int, default=d.limit, help="use only the first N problems")
    g.add_argument(
        "--problem-column", default=d.problem_column, help="column holding the problem text"
    )
    g.add_argument(
        "--answer-column", default=d.answer_column, help="column holding the reference answer"
    )
    g.add_argument("--id-column", default=d.id_column, help="column holding a unique problem id")
    g.add_argument(
        "--prompt-template", default=d.prompt_template, help="user-turn template with {problem}"
    )
    g.add_argument("--system-prompt", default=d.system_prompt, help="optional system turn")
    g.add_argument(
        "--prompt-opens-think",
        default=d.prompt_opens_think,
        choices=PROMPT_OPENS_THINK,
        help="whether the teacher's chat template opens the think block in the prompt "
        "(DeepSeek-R1-Distill, QwQ); then a trace that never writes </think> has no answer and is "
        "dropped. auto: the teacher's template; for trace files, the records' prompt_opens_think "
        "(evals.run writes it), else --tokenizer's template, else no",
    )
    g.add_argument(
        "--tokenizer",
        default=d.tokenizer,
        help="tokenizer for token counts (default: the teacher's; "
        "with a trace file and no tokenizer, whitespace words are counted)",
    )
    g = p.add_argument_group("strategies")
    g.add_argument(
        "--max-ratio-to-median",
        type=float,
        default=o.max_ratio_to_median,
        help="shortest-correct: "
        "drop a problem unless its shortest correct chain is <= this x its median correct length",
    )
    g.add_argument(
        "--keep-verification",
        action="store_true",
        help="first-correct: keep one verification round "
        "after the first correct solution (FCS+Reflection)",
    )
    g.add_argument(
        "--on-fail",
        default=o.on_fail,
        choices=["keep", "drop"],
        help="first-correct: when the cut "
        "trace fails re-verification, keep the uncut (verified) trace or drop it",
    )
    g.add_argument(
        "--prune-scorer",
        default=d.prune_scorer,
        choices=["rules", "perplexity"],
        help="step-prune: "
        "rules = drop restatements and re-checks; perplexity = drop steps whose removal barely changes "
        "the model's perplexity (SPIRIT)",
    )
    g.add_argument(
        "--prune-model",
        default=d.prune_model,
        help="step-prune perplexity: the scoring model (default: the teacher)",
    )
    g.add_argument(
        "--prune-threshold",
        type=float,
        default=o.prune_threshold,
        help="step-prune perplexity: drop "
        "a step whose removal raises perplexity by less than this fraction",
    )
    g.add_argument(
        "--prune-max-drop-fraction",
        type=float,
        default=o.prune_max_drop_fraction,
        help="step-prune: drop at most this fraction of the steps",
    )
    g = p.add_argument_group("output")
    g.add_argument("--force", action="store_true", help="overwrite an existing --out")
    g.add_argument(
        "--push-to-hub", metavar="REPO", help="upload the dataset to this Hub dataset repo"
    )
    g.add_argument("--private", action="store_true", help="make the Hub repo private")
    pre, _ = p.parse_known_args(argv)
    if pre.config:
        values = _read_yaml(pre.config)
        dests = {a.dest for a in p._actions} - {"help", "config"}
        unknown = sorted(set(values) - dests)
        if unknown:
            raise ShortcotError(
                f"unknown key(s) {', '.join(unknown)} in {pre.config}; valid keys: {', '.join(sorted(dests))}"
            )
        p.set_defaults(**values)
    ns = p.parse_args(argv)
    if not ns.teacher or not ns.out:
        raise ShortcotError("--teacher and --out are required (on the command line or in --config)")
    if ns.samples < 1:
        raise ShortcotError(f"--samples must be >= 1, got {ns.samples}")
    if ns.max_ratio_to_median is not None and ns.max_ratio_to_median <= 0:
        raise ShortcotError(f"--max-ratio-to-median must be > 0, got {ns.max_ratio_to_median}")
    if not 0 <= ns.prune_max_drop_fraction <= 1:
        raise ShortcotError(
            f"--prune-max-drop-fraction must be in [0, 1], got {ns.prune_max_drop_fraction}"
        )
    opts = StrategyOptions(
        max_ratio_to_median=ns.max_ratio_to_median,
        keep_verification=ns.keep_verification,
        on_fail=ns.on_fail,
        prune_threshold=ns.prune_threshold,
        prune_max_drop_fraction=ns.prune_max_drop_fraction,
    )
    option_keys = (
        "max_ratio_to_median",
        "keep_verification",
        "on_fail",
        "prune_threshold",
        "prune_max_drop_fraction",
    )
    fields = {k: v for k, v in vars(ns).items() if k not in (*option_keys, "config")}
    return BuildConfig(options=opts, **fields)


def main(argv: Sequence[str] | None = None) -> int:
    build(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
