"""The model card of a distilled student (teacher, losses and weights, layer mapping, settings, scores), built
as a `huggingface_hub.ModelCard` from the run's summary."""

from __future__ import annotations

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .arguments import distillation_fields
from .teachers import teacher_weight_tensor

TAGS = ("distilnlp", "distillation", "knowledge-distillation")
# (name on the card, key in the results: `{role}_test_{key}`)
SCORES = (("accuracy", "accuracy"), ("macro-F1", "f1"))
# A token classifier's scores: seqeval's entity-level precision / recall / F1 and the accuracy over words.
TOKEN_SCORES = (
    ("token accuracy", "accuracy"),
    ("entity precision", "precision"),
    ("entity recall", "recall"),
    ("entity F1", "f1"),
)


def _scores(results: dict) -> tuple[str, tuple]:
    """(the task, its score names and keys) of a results dict: token classification when it has recall."""
    if any(key.endswith("_test_recall") for key in results):
        return "token-classification", TOKEN_SCORES
    return "text-classification", SCORES


# ------------------------------------------------------------------------------------------------- the card


def build_model_card(results: dict, model_name: str, tags=(), **card_data) -> ModelCard:
    """The student's card. `results` is `distillation_summary(...)`, with the test scores
    (`student_test_accuracy`, ...) and the data record (`data`) of distill_results.json when known;
    `card_data` (license, language, ...) goes into the metadata."""
    task, scores = _scores(results)
    data = ModelCardData(
        model_name=model_name,
        base_model=_hub_id(results["teacher"]),
        library_name="transformers",
        pipeline_tag=task,
        tags=[*TAGS, *(tag for tag in tags if tag not in TAGS)],
        metrics=[key for _, key in scores if f"student_test_{key}" in results] or None,
        eval_results=_eval_results(results, model_name) or None,
        **card_data,
    )
    body = [
        f"# {model_name}",
        "",
        f"A student distilled with [distilnlp](https://pypi.org/project/distilnlp/) from the teacher "
        f"`{results['teacher']}`.",
        *_models_section(results),
        *_distillation_section(results),
        "",
        "## Distillation arguments",
        "",
        *_table(("argument", "value"), results["distillation_settings"].items()),
        *_results_section(results),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def _hub_id(name: str) -> str | None:
    """`name` if it is a Hub repo id (not a local folder, not a description such as 'soft labels (...)')."""
    if os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _eval_results(results: dict, model_name: str) -> list[EvalResult]:
    """The student's test scores as model-index entries (needs the dataset's name)."""
    dataset = (results.get("data") or {}).get("dataset")
    if not dataset:
        return []
    dataset_id = _hub_id(str(dataset)) or os.path.basename(str(dataset).rstrip("/"))
    task, scores = _scores(results)
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset_id,
            dataset_name=dataset_id,
            dataset_split="test",
            metric_type=key,
            metric_name=name,
            metric_value=results[f"student_test_{key}"],
            **(
                {"metric_args": {"average": "macro"}}
                if key == "f1" and task != "token-classification"
                else {}
            ),
        )
        for name, key in scores
        if f"student_test_{key}" in results
    ]


def _table(header: tuple[str, str], rows) -> list[str]:
    return [
        f"| {header[0]} | {header[1]} |",
        "|---|---|",
        *(f"| {key} | {_cell(value)} |" for key, value in rows),
    ]


def _cell(value) -> str:
    """A list option as it is written on the command line (`1.0,3.0`), anything else as text."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _models_section(summary: dict) -> list[str]:
    lines = ["", "## Models", "", "| | layers | hidden size | heads | parameters |", "|---|---|---|---|---|"]
    for role in ("teacher", "student"):
        shape = summary[f"{role}_shape"]
        if shape is None:  # soft labels brought from outside: no teacher model is known
            lines.append(f"| {role} | {summary[role]} | | | |")
            continue
        lines.append(
            f"| {role} | {shape['layers']} | {shape['hidden_size']} | {shape['heads']} | {shape['parameters']:,} |"
        )
    return lines


def _distillation_section(summary: dict) -> list[str]:
    losses = summary["losses"]
    relations = "relation_types" in losses
    soft = f"T^2-scaled KL at temperature {losses['temperature']}, alpha = {losses['alpha']}"
    rows = [("soft targets", soft)]
    if "ensemble" in summary:
        ensemble = summary["ensemble"]
        rows.append(
            (
                "several teachers",
                f"soft targets = weighted mean of {len(ensemble['teachers'])} teachers' probabilities, weights "
                f"{ensemble['weights']}; features from teacher {ensemble['feature_teacher']}",
            )
        )
    rows += [
        ("hard labels", f"weight {round(1 - losses['alpha'], 6)}"),
        ("hidden states", f"{losses['hidden_loss']}, weight {losses['hidden_weight']}"),
        ("attention maps", f"{losses['attention_loss']}, weight {losses['attention_weight']}"),
    ]
    if relations:
        kinds = ", ".join(f"{k.upper()}-{k.upper()}" for k in losses["relation_types"])
        rows.append(
            (
                "attention relations (MiniLMv2)",
                f"{kinds} over {losses['relation_heads']} relation heads, student:teacher "
                f"{_pairs(losses['relation_layers'])}, weight {losses['relation_weight']}",
            )
        )
    pairs = _pairs(summary["hidden_pairs"] or summary["attention_pairs"])
    rows.append(("layer mapping", f"`{summary['layer_mapping']}`: student:teacher {pairs}"))
    if summary.get("teacher_layers_copied") is not None:
        rows.append(("student initialised from teacher layers (0-based)", summary["teacher_layers_copied"]))
    rows += [(key.replace("_", " "), value) for key, value in summary["training"].items()]
    rows += [
        (f"{name} (changed on resume)", f"{old} before the resumed checkpoint, {new} after")
        for name, (old, new) in (summary.get("changed_on_resume") or {}).items()
    ]
    formula = (
        "Loss = alpha * soft + (1 - alpha) * hard + hidden_weight * hidden + attention_weight * attention"
    )
    formula += " + relation_weight * relation" if relations else ""
    return ["", "## Distillation", "", formula, "", *_table(("setting", "value"), rows)]


def _results_section(results: dict) -> list[str]:
    scores = [
        (f"{role} {name} (test)", f"{results[f'{role}_test_{key}']:.4f}")
        for role in ("teacher", "student")
        for name, key in _scores(results)[1]
        if f"{role}_test_{key}" in results
    ]
    return ["", "## Results", "", *_table(("metric", "value"), scores)] if scores else []


def _pairs(pairs: list) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs) if pairs else "(logits only)"


# ---------------------------------------------------------------------------------------------- the summary


def distillation_summary(trainer, changed_on_resume: dict | None = None) -> dict:
    """How `trainer` (a `DistillationTrainer`) taught its student: teacher, shapes, losses and weights, layer
    mapping, settings; `changed_on_resume` is {setting: [before, after]} for a run resumed with other settings."""
    args = trainer.args
    student = trainer.accelerator.unwrap_model(trainer.model)
    projections = getattr(student, "distillation_projections", None)
    projection_parameters = sum(p.numel() for p in projections.parameters()) if projections is not None else 0
    cache = trainer.teacher_cache_info
    teacher, teacher_shape = _teacher(trainer)
    return {
        "teacher": teacher,
        "teacher_shape": teacher_shape,
        "student_shape": _shape(student, projection_parameters),
        "losses": _losses(args, getattr(trainer, "relations", None)),
        **_ensemble(trainer),
        "teacher_cache": (
            {k: cache[k] for k in ("path", "fingerprint", "backend", "key")} if cache is not None else None
        ),
        "layer_mapping": ",".join(args.layer_mapping),
        # Every distillation setting as given, so the run can be repeated (the entries above are resolved).
        "distillation_settings": {name: getattr(args, name) for name in distillation_fields(args)},
        "changed_on_resume": dict(changed_on_resume or {}),
        "hidden_pairs": [list(p) for p in trainer.hidden_pairs],
        "attention_pairs": [list(p) for p in trainer.attention_pairs],
        "teacher_layers_copied": getattr(student.config, "distilnlp_teacher_layers", None),
        "training": _training(args),
    }


def _shape(model, extra_parameters: int = 0) -> dict:
    config = model.config
    return dict(
        layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        heads=config.num_attention_heads,
        parameters=model.num_parameters() - extra_parameters,
    )


def _model_name(model) -> str:
    return model.config._name_or_path or type(model).__name__


def _teacher(trainer) -> tuple[str, dict | None]:
    """The teacher's name and shape: from the (feature) teacher model, else from the teacher cache."""
    cache = trainer.teacher_cache_info
    if trainer.teacher_model is not None:
        return _model_name(trainer.teacher_model), _shape(trainer.teacher_model)
    if cache is not None:
        return cache["teacher"]["name"], cache["teacher"]["shape"]
    return "unknown (cached logits)", None  # logits attached by the caller, no teacher: nothing is known


def _losses(args, relations) -> dict:
    schedules = {
        name: {"schedule": getattr(args, f"{name}_schedule"), "end": getattr(args, f"{name}_end")}
        for name in args.scheduled
    }
    losses = {
        "temperature": args.temperature,
        "alpha": args.alpha,
        "hidden_loss": args.hidden_loss,
        "hidden_weight": args.hidden_weight,
        "attention_loss": args.attention_loss,
        "attention_weight": args.attention_weight,
        "relation_weight": args.relation_weight,
    }
    if relations is not None:
        losses |= {
            "relation_layers": [list(p) for p in relations.pairs],
            "relation_types": list(relations.kinds),
            "relation_heads": relations.heads,
        }
    return losses | ({"schedules": schedules} if schedules else {})


def _ensemble(trainer) -> dict:
    """{"ensemble": teachers, normalised weights, feature teacher} when there are several teacher models."""
    teachers = getattr(trainer, "teachers", [])
    if len(teachers) <= 1:
        return {}
    weights = teacher_weight_tensor(trainer.args.teacher_weights, len(teachers))
    return {
        "ensemble": {
            "teachers": [_model_name(t) for t in teachers],
            "weights": [round(w, 6) for w in weights.tolist()],
            "feature_teacher": trainer.args.feature_teacher,
        }
    }


def _training(args) -> dict:
    return {
        "learning_rate": args.learning_rate,
        "train_batch_size": (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        ),
        "epochs": args.num_train_epochs if args.max_steps <= 0 else None,
        "max_steps": args.max_steps if args.max_steps > 0 else None,
        "seed": args.seed,
    }
