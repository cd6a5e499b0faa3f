"""Compare evaluation runs: a side-by-side table and the accuracy-versus-tokens Pareto plot.

    python -m evals.compare --dirs runs/eval/base runs/eval/dler runs/eval/merged \\
        --labels base DLER merged --plot pareto.png --out table.md

Each of ``--dirs`` is an ``evals.run`` output folder (its ``summary.json`` is read). Changes are
relative to the first run: accuracy in percentage points, tokens in percent, the way the
papers report "x% fewer tokens at y points of accuracy". A run is on the Pareto front
when no other run is at least as accurate with at most as many tokens (and strictly
better in one of the two).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from artifacts import cli
from artifacts.cli import arg
from artifacts.errors import ShortcotError, run_cli
from artifacts.outdir import atomic_write_text


def load_summary(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    if not path.exists():
        raise ShortcotError(
            f"{folder} has no summary.json; pass folders written by python -m evals.run"
        )
    return json.loads(path.read_text())


def pct_change(value: float | None, base: float | None) -> float | None:
    """Relative change of ``value`` against ``base`` in percent (None if undefined).

    >>> pct_change(600, 1000)
    -40.0
    """
    if value is None or base in (None, 0):
        return None
    return 100.0 * (value - base) / base


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (tokens, accuracy) points no other point dominates.

    ``q`` dominates ``p`` when ``q.tokens <= p.tokens`` and ``q.acc >= p.acc`` with one of
    them strict (fewer tokens and higher accuracy are both better). Returned sorted by
    tokens.

    >>> pareto_front([(100, 0.5), (200, 0.7), (150, 0.4), (300, 0.7)])
    [0, 1]
    """
    front = []
    for i, (t, a) in enumerate(points):
        dominated = any(
            (t2 <= t and a2 >= a) and (t2 < t or a2 > a)
            for j, (t2, a2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def comparison_rows(summaries: Sequence[dict], labels: Sequence[str]) -> list[dict]:
    """One row per run: accuracy (%), s.e., change in points, tokens, change in %, ..."""
    base = summaries[0]
    points = [(s["mean_tokens"] or 0.0, s["accuracy"] or 0.0) for s in summaries]
    front = set(pareto_front(points))
    rows = []
    for i, (s, label) in enumerate(zip(summaries, labels)):
        acc = None if s["accuracy"] is None else 100 * s["accuracy"]
        base_acc = None if base["accuracy"] is None else 100 * base["accuracy"]
        rows.append(
            {
                "label": label,
                "accuracy": acc,
                "accuracy_se": None if s.get("accuracy_se") is None else 100 * s["accuracy_se"],
                "d_accuracy": None if acc is None or base_acc is None else acc - base_acc,
                "mean_tokens": s["mean_tokens"],
                "d_tokens_pct": pct_change(s["mean_tokens"], base["mean_tokens"]),
                "p90_tokens": s.get("p90_tokens"),
                "truncation": None
                if s.get("truncation_rate") is None
                else 100 * s["truncation_rate"],
                "n": f"{s['n_problems']}x{s.get('samples_per_problem', '?')}",
                "pareto": i in front,
            }
        )
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    def f(x, spec=".1f", sign=False):
        if x is None:
            return "-"
        return format(x, ("+" if sign else "") + spec)

    lines = [
        "| run | accuracy (%) | s.e. | Δ acc (pts) | mean tokens | Δ tokens (%) | p90 tokens | truncated (%) | problems x samples | Pareto |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        first = i == 0
        lines.append(
            f"| {r['label']} | {f(r['accuracy'])} | {f(r['accuracy_se'])} | "
            f"{'-' if first else f(r['d_accuracy'], sign=True)} | {f(r['mean_tokens'], '.0f')} | "
            f"{'-' if first else f(r['d_tokens_pct'], sign=True)} | {f(r['p90_tokens'], '.0f')} | "
            f"{f(r['truncation'])} | {r['n']} | {'*' if r['pareto'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def difficulty_table(summaries: Sequence[dict], labels: Sequence[str]) -> str:
    """Accuracy (± s.e.) and mean tokens per difficulty level, one row per run ("" when no
    run has levels). Length RL typically costs accuracy on the hardest level first, which
    the overall mean hides.

    >>> s = {"by_difficulty": {"2": {"accuracy": 1.0, "accuracy_se": 0.0, "mean_tokens": 20.4},
    ...                        "6": {"accuracy": 0.5, "accuracy_se": 0.05, "mean_tokens": 33}}}
    >>> print(difficulty_table([s], ["dler"]), end="")
    | run | 2 | 6 |
    |---|---|---|
    | dler | 100.0 ± 0.0% / 20 t | 50.0 ± 5.0% / 33 t |
    """
    levels: list[str] = []
    for s in summaries:
        levels += [k for k in (s.get("by_difficulty") or {}) if k not in levels]
    if not levels:
        return ""
    from evals.metrics import _difficulty_key

    levels.sort(key=_difficulty_key)
    lines = ["| run | " + " | ".join(levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for s, label in zip(summaries, labels):
        cells = []
        for level in levels:
            c = (s.get("by_difficulty") or {}).get(level)
            if not c or c.get("accuracy") is None:
                cells.append("-")
                continue
            se = c.get("accuracy_se") or 0.0
            cells.append(f"{100 * c['accuracy']:.1f} ± {100 * se:.1f}% / {c['mean_tokens']:.0f} t")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Label positions tried in turn (offset in points from the point; a label whose text ends
# left of its point is right-aligned) until one stays inside the axes and overlaps no label
# placed before: runs close
# in both axes are common (a merge sweep puts ten runs within a few tokens at 100%). Labels
# moved away from their point get a thin leader line.
_LABEL_SPOTS = [
    (dx, dy)
    for dy in (5, -12, 15, -22, 25, -32, 35, -42, 45, -52, -62, -72, -82, -92)
    for dx in (5, -5)
]


def _place_labels(fig, ax, xs, ys, labels) -> None:
    """Annotate each point with its label, moving labels around to avoid overlapping ones."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for x, y, label in zip(xs, ys, labels):
        spots = [*_LABEL_SPOTS, _LABEL_SPOTS[0]]  # nowhere free: the first spot after all
        for i, (dx, dy) in enumerate(spots):
            leader = {"arrowstyle": "-", "color": "0.6", "lw": 0.5} if abs(dy) > 15 else None
            text = ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="left" if dx > 0 else "right",
                fontsize=8,
                arrowprops=leader,
            )
            # the text's own box: an annotation's box also spans its leader line
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer)
            inside = (
                frame.x0 <= box.x0
                and box.x1 <= frame.x1
                and frame.y0 <= box.y0
                and box.y1 <= frame.y1
            )
            if i == len(spots) - 1 or (inside and not any(box.overlaps(o) for o in placed)):
                break
            text.remove()
        placed.append(box)


def plot_pareto(
    rows: Sequence[dict],
    path: str | Path,
    title: str = "Accuracy vs tokens",
    marked: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Scatter accuracy against mean tokens, label each run, draw the Pareto front; runs
    whose label is in ``marked`` (e.g. the paper's setting in a sweep) get a star."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; safe on servers and in tests
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    xs = [r["mean_tokens"] or 0.0 for r in rows]
    ys = [r["accuracy"] or 0.0 for r in rows]
    err = [r["accuracy_se"] or 0.0 for r in rows]
    ax.errorbar(
        xs, ys, yerr=err, fmt="o", color="tab:blue", ecolor="lightgray", capsize=3, zorder=2
    )
    front = sorted((i for i, r in enumerate(rows) if r["pareto"]), key=lambda i: xs[i])
    ax.plot(
        [xs[i] for i in front],
        [ys[i] for i in front],
        "-",
        color="tab:red",
        lw=1.5,
        label="Pareto front",
        zorder=1,
    )
    ax.scatter(
        [xs[i] for i in front],
        [ys[i] for i in front],
        s=80,
        facecolors="none",
        edgecolors="tab:red",
        zorder=3,
    )
    stars = [i for i, r in enumerate(rows) if r["label"] in marked]
    if stars:
        ax.scatter(
            [xs[i] for i in stars],
            [ys[i] for i in stars],
            marker="*",
            s=220,
            color="tab:orange",
            edgecolors="black",
            linewidths=0.5,
            zorder=4,
            label=", ".join(rows[i]["label"] for i in stars),
        )
    ax.set_xlabel("mean generated tokens")
    ax.set_ylabel("pass@1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()  # before the labels: placing them needs the final data-to-pixel map
    _place_labels(fig, ax, xs, ys, [r["label"] for r in rows])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


@dataclass
class CompareConfig:
    """Settings of ``python -m evals.compare`` (the flags and recipe keys, one to one)."""

    dirs: list[str] = arg(help="evals.run output folders; the first is the baseline")
    labels: list[str] | None = arg(None, "one label per folder (default: folder names)")
    plot: str | None = arg(None, "write the Pareto plot to this PNG file")
    out: str | None = arg(None, "write the markdown table to this file")
    title: str = arg("Accuracy vs tokens", "plot title")
    force: bool = arg(False, "overwrite existing --plot / --out files")


def parse_args(argv: Sequence[str] | None = None) -> tuple[CompareConfig]:
    """Flags and ``--config`` recipe (same keys, flags win) -> (CompareConfig,)."""
    return cli.parse_args(
        [CompareConfig],
        argv,
        prog="evals.compare",
        description="Compare evals.run output folders: a markdown table (accuracy, tokens, "
        "change against the first run) and an accuracy-vs-tokens Pareto plot.",
        epilog="example: python -m evals.compare --dirs runs/eval/base runs/eval/dler "
        "--labels base DLER --plot pareto.png --out table.md",
    )


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = parse_args(argv)
    labels = args.labels or [Path(d).name for d in args.dirs]
    if len(labels) != len(args.dirs):
        raise ShortcotError(
            f"--labels has {len(labels)} names for {len(args.dirs)} folders; give one per folder"
        )
    for target in (args.plot, args.out):
        if target and Path(target).exists() and not args.force:
            raise ShortcotError(f"{target} already exists; pass --force to overwrite it")
    summaries = [load_summary(d) for d in args.dirs]
    rows = comparison_rows(summaries, labels)
    table = markdown_table(rows)
    by_level = difficulty_table(summaries, labels)
    if by_level:
        table += "\nBy difficulty (accuracy ± s.e. / mean tokens):\n\n" + by_level
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")
    if args.plot:
        plot_pareto(rows, args.plot, args.title)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
