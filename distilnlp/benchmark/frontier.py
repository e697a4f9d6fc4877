"""The accuracy-latency frontier of a set of models, and the model to ship from it (used by `distilnlp sweep`).

A point is a mapping with at least `name`, `accuracy`, `latency_p50_ms` and `size_mb`; `candidate` (default True)
says whether it may be chosen (the teacher is drawn and marked, never chosen). Everything here is pure: no
models, no files except the plot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

Point = Mapping[str, Any]


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as accurate and at least as fast as `b`, and strictly better in one of the two."""
    at_least = a["accuracy"] >= b["accuracy"] and a["latency_p50_ms"] <= b["latency_p50_ms"]
    strictly = a["accuracy"] > b["accuracy"] or a["latency_p50_ms"] < b["latency_p50_ms"]
    return at_least and strictly


def pareto_front(points: Sequence[Point]) -> list[bool]:
    """on_front[i] for each point: no other point dominates it (higher accuracy, lower p50 latency).

    Quadratic, which is fine for the dozen points of a sweep; two identical points are both on the front.
    """
    return [not any(dominates(other, p) for other in points if other is not p) for p in points]


def choose_model(points: Sequence[Point], teacher_accuracy: float, min_retention: float) -> dict[str, Any]:
    """The model to ship: the smallest file (ties: lower p50 latency) among the candidates whose accuracy is at
    least `min_retention` x `teacher_accuracy`; when none is, the most accurate candidate (ties: smaller).

    Returns {"name", "meets_min_retention", "reason"}; raises ValueError with no candidate at all.
    """
    candidates = [p for p in points if p.get("candidate", True)]
    if not candidates:
        raise ValueError("No candidate model to choose from: every export of the sweep failed.")
    needed = min_retention * teacher_accuracy
    meeting = [p for p in candidates if p["accuracy"] >= needed]
    if meeting:
        best = min(meeting, key=lambda p: (p["size_mb"], p["latency_p50_ms"]))
        reason = (
            f"smallest model ({best['size_mb']:.2f} MB, p50 {best['latency_p50_ms']:.2f} ms) with accuracy "
            f"{best['accuracy']:.4f} >= {min_retention:g} x teacher {teacher_accuracy:.4f} = {needed:.4f}"
        )
        return {"name": best["name"], "meets_min_retention": True, "reason": reason}
    best = max(candidates, key=lambda p: (p["accuracy"], -p["size_mb"]))
    reason = (
        f"NO model meets min_retention {min_retention:g} (accuracy >= {needed:.4f}, teacher {teacher_accuracy:.4f}); "
        f"the most accurate is named instead ({best['accuracy']:.4f}, "
        f"{best['accuracy'] / teacher_accuracy:.1%} of the teacher)"
    )
    return {"name": best["name"], "meets_min_retention": False, "reason": reason}


def markdown_table(points: Sequence[Point], chosen: str | None = None) -> str:
    """Depth, variant, accuracy, retention, p50 latency at batch 1, size and Pareto flag, one row per point."""
    lines = [
        "| Model | Depth | Variant | Accuracy | Retention vs teacher | p50 batch 1 (ms) | Size (MB) | Pareto front |",
        "|---|---:|---|---:|---:|---:|---:|:---:|",
    ]
    for p in points:
        mark = " **(chosen)**" if p["name"] == chosen else ""
        lines.append(
            f"| {p['name']}{mark} | {p.get('depth') or '-'} | {p.get('variant', '')} | {p['accuracy']:.4f} "
            f"| {p['retention']:.2%} | {p['latency_p50_ms']:.2f} | {p['size_mb']:.2f} "
            f"| {'yes' if p['on_pareto_front'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_frontier(
    points: Sequence[Point], path: str | os.PathLike, chosen: str | None = None, title: str = ""
) -> None:
    """Accuracy against batch-1 p50 latency (log x: depths and int8 spread latencies over a decade), every point
    labelled, the Pareto front joined by a step line, the chosen model circled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig = Figure(figsize=(8, 5), dpi=120)
    FigureCanvasAgg(fig)  # no pyplot: the caller's global backend stays as it is
    ax = fig.add_subplot()
    markers = {"fp32": "o", "int8 PTQ": "s", "int8 QAT": "^"}
    # The variants of one depth sit close together: each variant's label goes to its own side of the point.
    offsets = {"fp32": (6, 6), "int8 PTQ": (6, -11), "int8 QAT": (-6, 8)}
    for p in points:
        on = p["on_pareto_front"]
        ax.scatter(
            p["latency_p50_ms"],
            p["accuracy"],
            marker=markers.get(p.get("variant"), "D"),
            s=60,
            color="tab:red" if on else "tab:gray",
            zorder=3,
        )
        dx, dy = offsets.get(p.get("variant"), (6, 4))
        ax.annotate(
            p["name"],
            (p["latency_p50_ms"], p["accuracy"]),
            textcoords="offset points",
            xytext=(dx, dy),
            ha="left" if dx > 0 else "right",
            fontsize=7,
        )
    front = sorted((p for p in points if p["on_pareto_front"]), key=lambda p: p["latency_p50_ms"])
    if len(front) > 1:
        ax.step(
            [p["latency_p50_ms"] for p in front],
            [p["accuracy"] for p in front],
            where="post",
            color="tab:red",
            alpha=0.6,
            label="Pareto front",
        )
    for p in points:
        if p["name"] == chosen:
            ax.scatter(
                p["latency_p50_ms"], p["accuracy"], s=260, facecolors="none", edgecolors="k", label="chosen"
            )
    latencies = [p["latency_p50_ms"] for p in points]
    if max(latencies) > 3 * min(latencies):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        # Minor ticks labelled too when the span is short (else a sub-decade axis has one label or none).
        short = max(latencies) < 30 * min(latencies)
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g") if short else NullFormatter())
        ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    else:
        ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.margins(x=0.08, y=0.12)  # room for the labels at the edges
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "Accuracy vs latency (red: Pareto front; o fp32, s int8 PTQ, ^ int8 QAT)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
