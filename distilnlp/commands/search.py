"""`distilnlp search`: tune temperature, alpha and the loss weights with Optuna, write the best as a recipe.

Runs `Trainer.hyperparameter_search(backend="optuna")` on a `DistillationTrainer` whose `model_init` builds a
fresh student per trial (the trainer sets up layer pairs and projections again for each one). The objective
is a validation metric (accuracy by default). Every trial is logged and written to `search_trials.json`; the
best settings are written back into the recipe, as a YAML file that `distilnlp distill` runs unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import DataArguments
from ..distill.arguments import DistillationTrainingArguments
from ..distill.trainer import DistillationTrainer
from .arguments import DistillArguments
from .stages import build_student, load_teacher_and_data
from .steps import task_collator_and_metrics, write_json

logger = logging.getLogger(__name__)

# Searched field -> whether Optuna samples it on a log scale (when its range starts above 0).
SEARCHABLE = {"temperature": True, "alpha": False, "hidden_weight": False, "attention_weight": False}


@dataclass
class SearchArguments:
    """What `distilnlp search` tunes and where it writes the result. A range is `[low, high]`; one value
    fixes the setting; unset keeps the recipe's value."""

    n_trials: int = field(default=10, metadata={"help": "Number of Optuna trials (one training run each)."})
    search_temperature: list[float] | None = field(
        default_factory=lambda: [1.0, 8.0],
        metadata={"help": "Temperature range [low high], sampled on a log scale."},
    )
    search_alpha: list[float] | None = field(
        default_factory=lambda: [0.1, 0.9], metadata={"help": "Range [low high] of alpha (in [0, 1])."}
    )
    search_hidden_weight: list[float] | None = field(
        default=None, metadata={"help": "Range [low high] of hidden_weight; unset: keep the recipe's value."}
    )
    search_attention_weight: list[float] | None = field(
        default=None,
        metadata={"help": "Range [low high] of attention_weight; unset: keep the recipe's value."},
    )
    search_metric: str = field(
        default="accuracy",
        metadata={
            "help": "Validation metric to maximise: accuracy or f1 (macro-F1; for token classification entity "
            "F1, with accuracy the word accuracy)."
        },
    )
    search_seed: int = field(default=0, metadata={"help": "Seed of Optuna's TPE sampler."})
    best_recipe: str | None = field(
        default=None,
        metadata={
            "help": "Where to write the best settings as a recipe; default: <output_dir>/best_recipe.yaml."
        },
    )

    def __post_init__(self):
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}.")
        for name in SEARCHABLE:
            values = getattr(self, f"search_{name}")
            if values is None:
                continue
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"search_{name} must hold finite numbers, got {values}.")
            if len(values) not in (1, 2) or (len(values) == 2 and values[0] > values[1]):
                raise ValueError(
                    f"search_{name} must be one value or a range [low high] with low <= high, got {values}."
                )
            if name == "alpha" and not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"search_alpha must lie in [0, 1], got {values}.")
            if name == "temperature" and not all(v > 0 for v in values):
                raise ValueError(f"search_temperature must be > 0, got {values}.")
            if not all(v >= 0 for v in values):
                raise ValueError(f"search_{name} must be >= 0, got {values}.")

    def ranges(self) -> dict[str, list[float]]:
        return {
            name: values for name in SEARCHABLE if (values := getattr(self, f"search_{name}")) is not None
        }

    def hp_space(self):
        """The Optuna search space: a function of a trial returning {field: value}."""
        ranges = self.ranges()

        def space(trial) -> dict[str, float]:
            params = {}
            for name, values in ranges.items():
                low, high = values[0], values[-1]
                if low == high:
                    params[name] = low
                else:
                    params[name] = trial.suggest_float(name, low, high, log=SEARCHABLE[name] and low > 0)
            return params

        return space


def write_best_recipe(path: Path, base: dict[str, Any], best: dict[str, float], header: str) -> None:
    search_fields = {f.name for f in dataclasses.fields(SearchArguments)}
    recipe = {k: v for k, v in base.items() if k not in search_fields}
    recipe.update({k: float(v) for k, v in best.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False))


def search(
    distill_args: DistillArguments,
    data_args: DataArguments,
    args: DistillationTrainingArguments,
    search_args: SearchArguments,
    base_recipe: dict[str, Any] | None = None,
) -> dict:
    """Run the search; returns the best trial, all trials and the path of the written recipe.

    `base_recipe` is the configuration to write the best values into (`commands.config.explicit_values` of
    the command line); without it the recipe holds only the searched values and the output folder.
    """
    import optuna

    ranges = search_args.ranges()
    may_use_attention = max([args.max_weight("attention_weight"), *ranges.get("attention_weight", [0.0])]) > 0
    attn_implementation = "eager" if may_use_attention else None
    teacher, tokenizer, tokenized, names = load_teacher_and_data(distill_args, data_args, attn_implementation)

    def model_init():
        return build_student(distill_args, teacher, attn_implementation, args.feature_teacher, names)

    # Token data: per-token padding, entity F1 (search_metric f1) and word accuracy.
    collator, metrics = task_collator_and_metrics(tokenized["train"], tokenizer)
    trainer = DistillationTrainer(
        model_init=model_init,
        teacher_model=teacher,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=metrics,
    )
    metric = f"eval_{search_args.search_metric}"

    def objective(metrics: dict[str, float]) -> float:
        if metric not in metrics:
            raise ValueError(f"search_metric {search_args.search_metric!r} is not among {sorted(metrics)}.")
        return metrics[metric]

    storage = optuna.storages.InMemoryStorage()
    best = trainer.hyperparameter_search(
        hp_space=search_args.hp_space(),
        compute_objective=objective,
        n_trials=search_args.n_trials,
        direction="maximize",
        backend="optuna",
        study_name="distilnlp-search",
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=search_args.search_seed),
    )
    study = optuna.load_study(study_name="distilnlp-search", storage=storage)
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
        for t in study.trials
    ]
    for t in trials:
        logger.info(f"trial {t['number']}: {metric} = {t['value']} with {t['params']}")
    output_dir = Path(args.output_dir)
    fixed = {name: values[0] for name, values in ranges.items() if values[0] == values[-1]}
    best_values = fixed | best.hyperparameters
    recipe_path = Path(search_args.best_recipe or output_dir / "best_recipe.yaml")
    base = dict(base_recipe or {})
    base["output_dir"] = str(output_dir / "best")
    header = (
        f"# Written by `distilnlp search`: best of {len(trials)} trials, {metric} = {best.objective:.4f}.\n"
        f"# Run it with: distilnlp distill {recipe_path}\n"
    )
    write_best_recipe(recipe_path, base, best_values, header)
    result = {
        "metric": metric,
        "best": {"trial": int(best.run_id), "value": best.objective, "params": best_values},
    }
    result |= {"trials": trials, "recipe": str(recipe_path)}
    write_json(output_dir / "search_trials.json", result)
    return result


__all__ = ["SearchArguments", "search"]
