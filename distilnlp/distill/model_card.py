"""The model card of a distilled student: teacher, losses and weights, layer mapping, scores."""

from __future__ import annotations

from .arguments import distillation_fields


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
        if shape is None:  # soft labels brought from outside: no teacher model is known
            lines.append(f"| {role} | {summary[role]} | | | |")
            continue
        lines.append(
            f"| {role} | {shape['layers']} | {shape['hidden_size']} | {shape['heads']} | {shape['parameters']:,} |"
        )
    lines += [
        "",
        "## Distillation",
        "",
        "Loss = alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + attention_weight * attention"
        + (" + relation_weight * relation" if "relation_types" in losses else ""),
        "",
        "| setting | value |",
        "|---|---|",
        f"| soft targets | T^2-scaled KL at temperature {losses['temperature']}, alpha = {losses['alpha']} |",
        *(
            [
                f"| several teachers | soft targets = weighted mean of {len(summary['ensemble']['teachers'])} "
                f"teachers' probabilities, weights {summary['ensemble']['weights']}; features from teacher "
                f"{summary['ensemble']['feature_teacher']} |"
            ]
            if "ensemble" in summary
            else []
        ),
        f"| hard labels | weight {round(1 - losses['alpha'], 6)} |",
        f"| hidden states | {losses['hidden_loss']}, weight {losses['hidden_weight']} |",
        f"| attention maps | {losses['attention_loss']}, weight {losses['attention_weight']} |",
        *(
            [
                f"| attention relations (MiniLMv2) | {', '.join(f'{k.upper()}-{k.upper()}' for k in losses['relation_types'])} "
                f"over {losses['relation_heads']} relation heads, student:teacher "
                f"{_pairs(losses['relation_layers'])}, weight {losses['relation_weight']} |"
            ]
            if "relation_types" in losses
            else []
        ),
        f"| layer mapping | `{summary['layer_mapping']}`: student:teacher "
        f"{_pairs(summary['hidden_pairs'] or summary['attention_pairs'])} |",
    ]
    if summary.get("teacher_layers_copied") is not None:
        lines.append(
            f"| student initialised from teacher layers (0-based) | {summary['teacher_layers_copied']} |"
        )
    training = summary["training"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in training.items()]
    for name, (old, new) in (summary.get("changed_on_resume") or {}).items():
        lines.append(f"| {name} (changed on resume) | {old} before the resumed checkpoint, {new} after |")
    lines += ["", "## Distillation arguments", "", "| argument | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in summary["distillation_settings"].items()]
    if scores:
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in scores.items()]
    return "\n".join(lines) + "\n"


def _pairs(pairs: list) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs) if pairs else "(logits only)"


def distillation_summary(trainer) -> dict:
    """How the student was taught: teacher, shapes, losses and weights, layer mapping, training settings."""
    args = trainer.args
    student = trainer.accelerator.unwrap_model(trainer.model)
    projections = getattr(student, "distillation_projections", None)

    def shape(model, extra_parameters=0):
        config = model.config
        parameters = model.num_parameters() - extra_parameters
        return dict(
            layers=config.num_hidden_layers,
            hidden_size=config.hidden_size,
            heads=config.num_attention_heads,
            parameters=parameters,
        )

    projection_parameters = sum(p.numel() for p in projections.parameters()) if projections is not None else 0
    cache = trainer.teacher_cache_info
    if trainer.teacher_model is not None:
        teacher = trainer.teacher_model.config._name_or_path or type(trainer.teacher_model).__name__
        teacher_shape = shape(trainer.teacher_model)
    elif cache is not None:
        teacher, teacher_shape = cache["teacher"]["name"], cache["teacher"]["shape"]
    else:  # logits attached by the caller, no teacher: nothing is known about it
        teacher, teacher_shape = "unknown (cached logits)", None
    schedules = {
        name: {"schedule": getattr(args, f"{name}_schedule"), "end": getattr(args, f"{name}_end")}
        for name in args.scheduled
    }
    return {
        "teacher": teacher,
        "teacher_shape": teacher_shape,
        "student_shape": shape(student, projection_parameters),
        "losses": {
            "temperature": args.temperature,
            "alpha": args.alpha,
            "hidden_loss": args.hidden_loss,
            "hidden_weight": args.hidden_weight,
            "attention_loss": args.attention_loss,
            "attention_weight": args.attention_weight,
            "relation_weight": args.relation_weight,
            **(
                {
                    "relation_layers": [list(p) for p in trainer.relations.pairs],
                    "relation_types": list(trainer.relations.kinds),
                    "relation_heads": trainer.relations.heads,
                }
                if getattr(trainer, "relations", None) is not None
                else {}
            ),
            **({"schedules": schedules} if schedules else {}),
        },
        **(
            {
                "ensemble": {
                    "teachers": [t.config._name_or_path or type(t).__name__ for t in trainer.teachers],
                    "weights": [round(w, 6) for w in trainer._teacher_weights.tolist()],
                    "feature_teacher": args.feature_teacher,
                }
            }
            if len(getattr(trainer, "teachers", [])) > 1
            else {}
        ),
        "teacher_cache": (
            {k: cache[k] for k in ("path", "fingerprint", "backend", "key")} if cache is not None else None
        ),
        "layer_mapping": args.layer_mapping,
        # Every distillation setting as given, so the run can be repeated (the entries above are resolved).
        "distillation_settings": {name: getattr(args, name) for name in distillation_fields(args)},
        # {setting: [value before, value after]} when a run was resumed with --allow_changed_settings.
        "changed_on_resume": getattr(trainer, "changed_settings", None) or {},
        "hidden_pairs": [list(p) for p in trainer.hidden_pairs],
        "attention_pairs": [list(p) for p in trainer.attention_pairs],
        "teacher_layers_copied": getattr(student.config, "distilnlp_teacher_layers", None),
        "training": {
            "learning_rate": args.learning_rate,
            "train_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "epochs": args.num_train_epochs if args.max_steps <= 0 else None,
            "max_steps": args.max_steps if args.max_steps > 0 else None,
            "seed": args.seed,
        },
    }
