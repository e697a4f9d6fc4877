"""The model card of a distilled student: teacher, losses and weights, layer mapping, scores."""

from __future__ import annotations


def render_model_card(summary: dict, scores: dict[str, float] | None, model_name: str) -> str:
    """Markdown (with Hub metadata) for a student; `summary` comes from `DistillationTrainer.distillation_summary`."""
    losses = summary["losses"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags:",
        "- distilnlp",
        "- knowledge-distillation",
        "---",
        "",
        f"# {model_name}",
        "",
        f"A student distilled with [distilnlp](https://pypi.org/project/distilnlp/) from the teacher "
        f"`{summary['teacher']}`.",
        "",
        "## Models",
        "",
        "| | layers | hidden size | heads | parameters |",
        "|---|---|---|---|---|",
    ]
    for role in ("teacher", "student"):
        shape = summary[f"{role}_shape"]
        lines.append(
            f"| {role} | {shape['layers']} | {shape['hidden_size']} | {shape['heads']} | {shape['parameters']:,} |"
        )
    lines += [
        "",
        "## Distillation",
        "",
        "Loss = alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + attention_weight * attention",
        "",
        "| setting | value |",
        "|---|---|",
        f"| soft targets | T^2-scaled KL at temperature {losses['temperature']}, alpha = {losses['alpha']} |",
        f"| hard labels | weight {round(1 - losses['alpha'], 6)} |",
        f"| hidden states | {losses['hidden_loss']}, weight {losses['hidden_weight']} |",
        f"| attention maps | {losses['attention_loss']}, weight {losses['attention_weight']} |",
        f"| layer mapping | `{summary['layer_mapping']}`: student:teacher "
        f"{_pairs(summary['hidden_pairs'] or summary['attention_pairs'])} |",
    ]
    if summary.get("teacher_layers_copied") is not None:
        lines.append(
            f"| student initialised from teacher layers (0-based) | {summary['teacher_layers_copied']} |"
        )
    training = summary["training"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in training.items()]
    if scores:
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in scores.items()]
    return "\n".join(lines) + "\n"


def _pairs(pairs: list) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs) if pairs else "(logits only)"
