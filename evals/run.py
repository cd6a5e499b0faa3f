"""Evaluate a model: accuracy against tokens, resumable.

    python -m evals.run --model runs/testbed/model --data runs/testbed/data/test.jsonl \\
        --grader testbed --samples 4 --max_new_tokens 512 --out runs/eval/base

Writes into ``--out``:

- ``settings.json``: the settings (written once the model has loaded; a rerun with other
  generation settings is refused once samples exist, so one folder never mixes two
  configurations);
- ``samples.jsonl``: one record per sample, appended after every finished batch, so an
  interrupted run resumes where it stopped (rerun the same command);
- ``summary.json`` / ``summary.md``: the metrics (`evals.metrics.summarize`), written
  atomically at the end; a rerun with nothing left to generate only recomputes them.

Every sample is graded under the answer contract (`evals.grading.grade_completion`):
when the chat template opens the think block in the prompt (DeepSeek-R1-Distill, QwQ;
read off the rendered template, or ``--prompt_opens_think yes|no``), a completion that
never writes ``</think>`` has no answer, whatever it boxed while thinking.

``--force`` over an existing ``--out`` writes into ``.OUT.new`` next to it and replaces
``--out`` only when the new run is complete; a forced run that fails leaves ``--out`` as it
was (rerunning it with ``--force`` continues ``.OUT.new``).

``--limit`` and ``--samples`` may grow between reruns (samples are seeded per
problem and sample index, see `evals.backends`, so the extra ones are exactly those an
uninterrupted larger run would have drawn). The summary covers the problems and samples
asked for by the current command.

Every flag is a field of `evals.config.EvalConfig` (the generation engine's from
`evals.engine.EngineOptions`) plus `artifacts.cli.HubArguments`; ``--config recipe.yaml``
takes the same names as keys (``configs/evals/``), flags win over it.

Other packages call `evaluate` in-process with an `EvalConfig` (and may pass an already
loaded backend). The pieces: `evals.config` (settings and checks), `evals.run_folder` (the
output folder and resume), `evals.records` (sample records, summary markdown).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from artifacts import cli
from artifacts.cli import HubArguments
from artifacts.errors import run_cli
from artifacts.jsonl import JsonlAppender, read_jsonl
from artifacts.outdir import OWNER_FILE, atomic_write_text, move_into_place, owner_record
from evals.backends import Backend, Completion, EngineOptions, Request, SamplingParams, load_backend
from evals.budget import generate_with_budget
from evals.config import (  # noqa: F401  (re-exported: evals.run is where callers look)
    GENERATION_KEYS,
    EvalConfig,
    generation_settings,
    settings_diff,
    validate,
)
from evals.data import load_problems
from evals.grading import (
    PROBE_PROBLEM,
    THINK_CLOSE,
    THINK_OPEN,
    get_grader,
    grade_completion,
    resolve_prompt_opens_think,
)
from evals.metrics import summarize
from evals.prompts import build_messages
from evals.records import make_record, summary_markdown, think_split
from evals.run_folder import (  # noqa: F401  (re-exported)
    SAMPLES_FILE,
    SETTINGS_FILE,
    prepare_out,
    repair_tail,
    staging_dir,
)


def _generate_chunk(
    backend: Backend, cfg: EvalConfig, requests: list[Request]
) -> list[tuple[Completion, bool]]:
    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 1, cfg.seed)
    if cfg.think_budget:
        return generate_with_budget(backend, requests, params, cfg.think_budget, cfg.budget_cue)
    return [(c, False) for c in backend.generate_requests(requests, params, progress=False)]


def evaluate(cfg: EvalConfig, backend: Backend | None = None) -> dict:
    """Run (or resume) an evaluation and return its summary (also written to ``cfg.out``).

    ``backend``: an already loaded `Backend` to reuse (its model must be ``cfg.model``);
    by default one is loaded only if there is something left to generate.
    """
    from tqdm.auto import tqdm

    validate(cfg)
    grader = get_grader(cfg.grader)
    problems = load_problems(
        cfg.data,
        cfg.problem_column,
        cfg.answer_column,
        cfg.id_column,
        cfg.difficulty_column,
        cfg.split,
        cfg.limit,
    )
    final = Path(cfg.out)
    settings = generation_settings(cfg)
    out, continued = prepare_out(final, settings, cfg.force)

    def write_settings() -> None:
        # Only once the model has loaded (or nothing is left to generate): a run that fails
        # before its first sample must not bind the folder to its settings.
        if not continued and out.exists():
            shutil.rmtree(out)  # an earlier forced run's samples, of other settings
        out.mkdir(parents=True, exist_ok=True)
        if out != final:
            (out / OWNER_FILE).write_text(json.dumps(owner_record()))
        atomic_write_text(
            out / SETTINGS_FILE,
            json.dumps(
                {"generation": settings, "all": dataclasses.asdict(cfg)}, indent=2, default=str
            )
            + "\n",
        )

    wanted = {(p.id, k) for p in problems for k in range(cfg.samples)}
    done: dict[tuple[str, int], dict] = {}
    for r in read_jsonl(out / SAMPLES_FILE) if continued else ():
        key = (str(r["id"]), int(r["sample"]))
        if key in wanted:
            done[key] = r
    pending = [(p, k) for p in problems for k in range(cfg.samples) if (p.id, k) not in done]

    if not pending:
        write_settings()
    else:
        backend = backend or load_backend(
            cfg.backend, cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
            engine=EngineOptions.from_config(cfg),
        )  # fmt: skip
        write_settings()
        close_ids = backend.encode(THINK_CLOSE)
        # R1-style templates open the think block in the prompt itself (the answer contract).
        opened = resolve_prompt_opens_think(
            cfg.prompt_opens_think,
            backend.render,
            build_messages(PROBE_PROBLEM, cfg.prompt_template, cfg.system_prompt),
        )
        prompts: dict[str, list[int]] = {}
        for p, _ in pending:
            if p.id not in prompts:
                prompts[p.id] = backend.prompt_ids(
                    build_messages(p.problem, cfg.prompt_template, cfg.system_prompt)
                )
        # Longest prompts first, so a batch holds similar lengths (less padding).
        pending.sort(key=lambda pk: -len(prompts[pk[0].id]))
        # vLLM schedules its own batches; bigger chunks keep it busy between checkpoints.
        chunk = cfg.batch_size if backend.name == "hf" else max(cfg.batch_size, 512)
        bar = tqdm(
            total=len(wanted),
            initial=len(done),
            desc="eval",
            unit="sample",
            disable=not cfg.progress,
        )
        repair_tail(out / SAMPLES_FILE)
        with JsonlAppender(out / SAMPLES_FILE) as sink:
            for start in range(0, len(pending), chunk):
                part = pending[start : start + chunk]
                t0 = time.perf_counter()
                gens = _generate_chunk(backend, cfg, [Request(prompts[p.id], k) for p, k in part])
                seconds = time.perf_counter() - t0
                total = sum(c.num_tokens for c, _ in gens) or 1
                for (p, k), (c, forced) in zip(part, gens):
                    rec = make_record(
                        p,
                        k,
                        c,
                        grade_completion(grader, c.text, p.answer, opened),
                        think_split(c.token_ids, close_ids, opened or THINK_OPEN in c.text),
                        forced,
                        seconds * c.num_tokens / total,
                        opened,
                    )
                    sink.write(rec)
                    done[(p.id, k)] = rec
                bar.update(len(part))
        bar.close()

    records = [done[(p.id, k)] for p in problems for k in range(cfg.samples)]
    summary = summarize(records, vote_k=cfg.vote)
    summary.update(
        {
            "model": cfg.model,
            "data": cfg.data,
            "think_budget": cfg.think_budget,
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
        }
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(summary, cfg))
    if out != final:  # a --force run is complete: only now does it replace the old output
        move_into_place(out, final)
    return summary


DESCRIPTION = (
    "Evaluate a model on math-style problems: pass@1 (mean and s.e. over problems) against "
    "generated tokens. Resumable: rerun the same command after an interruption."
)
EPILOG = (
    "example: python -m evals.run --model runs/testbed/model --data "
    "runs/testbed/data/test.jsonl --grader testbed --samples 4 --max_new_tokens 512 "
    "--out runs/eval/base   (add --think_budget 128 or --vote 4 for the inference-time "
    "baselines; --config configs/evals/paper_protocol.yaml for the papers' protocol)"
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[EvalConfig, HubArguments]:
    """Flags and ``--config`` recipe (same keys, flags win) -> (EvalConfig, HubArguments)."""
    return cli.parse_args(
        [EvalConfig, HubArguments],
        argv,
        prog="evals.run",
        description=DESCRIPTION,
        epilog=EPILOG,
    )


# Transitional name (merge.sweep calls it); same as parse_args.
parse_config = parse_args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, hub = parse_args(argv)
    repo = hub.hub_repo()
    summary = evaluate(cfg)
    print((Path(cfg.out) / "summary.md").read_text(), end="")
    n_p, n_s = summary["n_problems"], summary["n_samples"]
    print(f"wrote {cfg.out}/summary.json ({n_p} problems, {n_s} samples)")
    if repo:
        from artifacts.hub import push_folder

        url = push_folder(cfg.out, repo, private=hub.hub_private_repo, repo_type="dataset")
        print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    run_cli(main)
