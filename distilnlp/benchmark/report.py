"""The benchmark's report of its stage records: the ratios to the reference stage, a markdown table and an
accuracy-vs-latency plot."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def add_reference_ratios(records: list[dict[str, Any]], retained: str = "accuracy") -> dict[str, Any]:
    """Add to each stage record its speedup, size ratio and `accuracy_retained` (the share of the reference's
    `retained` score: accuracy, or a token classifier's entity F1) against the first (the reference), which is
    returned."""
    reference = records[0]
    for r in records:
        r["speedup"] = _ratio(reference["latency_p50_ms"], r["latency_p50_ms"])
        r["size_ratio"] = _ratio(r["size_mb"], reference["size_mb"])
        r["accuracy_retained"] = _ratio(r[retained], reference[retained])
    return reference


def markdown_table(stages: Sequence[Mapping[str, Any]], token_task: bool = False) -> str:
    """The stage records of `run_benchmark` as a markdown table (`token_task`: word accuracy, entity F1 and
    the share of the reference's entity F1 kept)."""

    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    scores = "Word acc. | Entity F1" if token_task else "Accuracy | Macro-F1"
    kept = "F1 retained" if token_task else "Acc. retained"
    lines = [
        f"| Stage | {scores} | p50 (ms) | p95 (ms) | Throughput (samples/s) | Size (MB) "
        f"| Params (M) | Speedup | Size ratio | {kept} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(
            f"| {s['name']} | {s['accuracy']:.4f} | {s['f1']:.4f} | {s['latency_p50_ms']:.2f} "
            f"| {s['latency_p95_ms']:.2f} | {s['throughput_samples_per_s']:.1f} | {s['size_mb']:.2f} "
            f"| {s['num_parameters'] / 1e6:.2f} | {fmt(s['speedup'], '.2f')}x | {fmt(s['size_ratio'], '.3f')} "
            f"| {fmt(s['accuracy_retained'], '.1%')} |"
        )
    return "\n".join(lines) + "\n"


def plot(stages: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Accuracy against batch-1 p50 latency; marker area proportional to model size."""
    # Figure + the Agg canvas directly: no pyplot, so the caller's global backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    largest = max(s["size_mb"] for s in stages) or 1.0
    for s in stages:
        # Stages often share an accuracy (one student, several runtimes): a legend, not labels on the points.
        ax.scatter(
            s["latency_p50_ms"],
            s["accuracy"],
            s=40 + 1500 * s["size_mb"] / largest,
            alpha=0.55,
            label=f"{s['name']}: {s['latency_p50_ms']:.2f} ms, {s['size_mb']:.1f} MB",
        )
    ys = np.array([s["accuracy"] for s in stages])
    y_pad = max(0.1 * np.ptp(ys), 0.01)
    ax.set_ylim(ys.min() - y_pad, ys.max() + y_pad)
    ax.set_xscale("log")  # latencies span an order of magnitude
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    legend = ax.legend(fontsize=7, loc="lower right", markerscale=0.3)
    for handle in legend.legend_handles:
        handle.set_sizes([30])
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs latency (marker area ~ model size)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
