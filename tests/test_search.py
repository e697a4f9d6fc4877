"""`distilnlp search` (Optuna via Trainer.hyperparameter_search) and `distilnlp cache-teacher` on tiny models."""

import json
from types import SimpleNamespace

import pytest
import yaml
from accelerate.state import AcceleratorState
from tiny import save_tiny_model, tiny_pair, token_dataset, write_topic_csv
from transformers.trainer_utils import HPSearchBackend

from distilnlp import DistillationTrainer, DistillationTrainingArguments
from distilnlp.commands.arguments import DistillArguments
from distilnlp.commands.cli import main
from distilnlp.commands.config import explicit_values
from distilnlp.commands.search import SearchArguments
from distilnlp.data import DataArguments
from distilnlp.teacher_cache import TeacherCache

pytest.importorskip("optuna")


@pytest.fixture(autouse=True)
def fresh_mixed_precision(monkeypatch):
    """`TrainingArguments(bf16=True)` earlier in the session leaves ACCELERATE_MIXED_PRECISION=bf16 in the
    environment (and accelerate's shared state), which every later Trainer would inherit: start clean."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state()


COMMON = dict(report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0)


@pytest.fixture
def setup(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    return teacher, data


def test_search_writes_a_recipe_that_distill_runs(tmp_path, setup, capsys):
    teacher, data = setup
    recipe = tmp_path / "search.yaml"
    recipe.write_text(
        yaml.safe_dump(
            dict(
                teacher=str(teacher),
                student_layers=2,
                dataset=str(data),
                output_dir=str(tmp_path / "search"),
                max_steps=2,
                per_device_train_batch_size=8,
                teacher_cache=str(tmp_path / "cache"),
                n_trials=2,
                search_temperature=[1.0, 4.0],
                search_alpha=[0.2, 0.8],
                search_hidden_weight=[0.0, 1.0],  # trials may turn on a loss that is 0 in the recipe
                **COMMON,
            )
        )
    )
    flags = ["--search_seed", "3", "--learning_rate", "1e-3", "--no_dataloader_pin_memory"]
    assert main(["search", str(recipe), *flags]) == 0
    out = tmp_path / "search"
    trials = json.loads((out / "search_trials.json").read_text())
    assert len(trials["trials"]) == 2 and all(t["state"] == "COMPLETE" for t in trials["trials"])
    assert trials["metric"] == "eval_accuracy"
    best_recipe = out / "best_recipe.yaml"
    values = yaml.safe_load(best_recipe.read_text())
    params = trials["best"]["params"]
    assert {k: values[k] for k in params} == pytest.approx(params)
    assert values["learning_rate"] == 1e-3 and values["output_dir"] == str(out / "best")
    assert values["dataloader_pin_memory"] is False  # a boolean set to false, not `no_<flag>: true`
    assert not any(k.startswith("search_") or k == "n_trials" for k in values)
    assert "best of 2 trials" in best_recipe.read_text()
    assert main(["distill", str(best_recipe)]) == 0
    results = json.loads((out / "best" / "distill_results.json").read_text())
    assert results["losses"]["temperature"] == pytest.approx(params["temperature"])


def test_each_trial_sets_up_its_new_student(tmp_path):
    """A trial that turns on the hidden loss (0 at construction) gets layer pairs and projections."""
    teacher, _ = tiny_pair()
    args = DistillationTrainingArguments(output_dir=str(tmp_path), max_steps=1, **COMMON)
    trainer = DistillationTrainer(
        model_init=lambda: tiny_pair()[1], teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    assert trainer.hidden_pairs == () and not hasattr(trainer.model, "distillation_projections")
    args.hidden_weight = 1.0  # what hyperparameter_search's setup does for a trial
    student = trainer.call_model_init()
    assert trainer.hidden_pairs == ((0, 0), (1, 2), (2, 4)) and hasattr(student, "distillation_projections")
    # A trial's values pass the same checks as the arguments' own.
    trainer.hp_search_backend, trainer.hp_space = HPSearchBackend.OPTUNA, lambda trial: {"alpha": 2.0}
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        trainer._hp_search_setup(SimpleNamespace(params={"alpha": 2.0}))


def test_search_arguments_and_explicit_values(tmp_path):
    with pytest.raises(ValueError, match="search_alpha must be one value or a range"):
        SearchArguments(search_alpha=[0.9, 0.1])
    with pytest.raises(ValueError, match="search_temperature must be > 0"):
        SearchArguments(search_temperature=[0.0, 2.0])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("teacher: t\nalpha: 0.5\nn_trials: 4\n")
    types = (DistillArguments, DataArguments, DistillationTrainingArguments, SearchArguments)
    argv = [
        str(recipe),
        "--alpha",
        "0.7",
        "--search_alpha",
        "0.1",
        "0.3",
        "--bf16",
        "--no_remove_unused_columns",
    ]
    values = explicit_values(types, argv)
    assert values == {
        "teacher": "t",
        "alpha": 0.7,
        "n_trials": 4,
        "search_alpha": [0.1, 0.3],
        "bf16": True,
        "remove_unused_columns": False,  # a `--no_<flag>` is written as the field, never as `no_<flag>: true`
    }


def test_cache_teacher_command_builds_once_and_rebuilds_when_stale(tmp_path, setup, capsys):
    teacher, data = setup
    argv = ["cache-teacher", "--teacher", str(teacher), "--dataset", str(data), "--output_dir", str(tmp_path)]
    argv += ["--teacher_cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "written" in capsys.readouterr().out
    first = TeacherCache.load(tmp_path / "cache")
    assert set(first.metadata["splits"]) == {"train", "validation"} and first.key.max_length == 128
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main([*argv, "--max_length", "8"]) == 0  # a new key: rebuilt, never reused
    assert "written" in capsys.readouterr().out
    assert TeacherCache.load(tmp_path / "cache").fingerprint != first.fingerprint


@pytest.mark.parametrize(
    ("name", "types"),
    [
        ("distill_bbc_news_offline.yaml", (DistillArguments, DataArguments, DistillationTrainingArguments)),
        (
            "search_bbc_news.yaml",
            (DistillArguments, DataArguments, DistillationTrainingArguments, SearchArguments),
        ),
    ],
)
def test_offline_recipes_parse(name, types, tmp_path):
    from pathlib import Path

    from distilnlp.commands.config import parse_config

    recipe = Path(__file__).parent.parent / "recipes" / name
    parsed = parse_config(types, [str(recipe), "--output_dir", str(tmp_path)])
    assert parsed[1].labeled_fraction == 0.1 and parsed[2].teacher_cache == "runs/teacher-cache"
