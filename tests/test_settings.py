"""One source per setting: the distillation settings are the fields `DistillationTrainingArguments` adds, and
every one of them is recorded, compared on resume, and written to the results and the model card."""

import dataclasses
import json

import pytest
from tiny import save_tiny_model, write_topic_csv
from transformers import TrainingArguments

from distilnlp import DistillationTrainingArguments
from distilnlp.commands.cli import main
from distilnlp.distill.arguments import (
    _SCHEDULED,
    NOT_SETTINGS,
    LossSettings,
    StageTrainingArguments,
    distillation_fields,
    run_settings,
)
from distilnlp.runs.checkpoints import CHANGEABLE_ON_RESUME, settings_changes

SETTINGS = distillation_fields(DistillationTrainingArguments)
_SCHEDULE_ENDS = {"temperature": 1.0, "alpha": 0.1}  # the weights end at 1.0
# For each setting, arguments that change it to another valid value (a schedule needs its end, and back).
CHANGES = {
    "temperature": {"temperature": 3.0},
    "alpha": {"alpha": 0.7},
    "hidden_weight": {"hidden_weight": 1.0},
    "attention_weight": {"attention_weight": 1.0},
    "relation_weight": {"relation_weight": 0.5},
    "hidden_loss": {"hidden_loss": "cosine"},
    "attention_loss": {"attention_loss": "mse"},
    "relation_heads": {"relation_heads": 2},
    "relation_types": {"relation_types": "q,k"},
    "relation_layers": {"relation_layers": "uniform"},
    "teacher_weights": {"teacher_weights": "1,2"},
    "feature_teacher": {"feature_teacher": 1},
    "augmentation": {"augmentation": "mask"},
    "augmentation_prob": {"augmentation_prob": 0.2},
    "teacher_cache": {"teacher_cache": "teacher-cache"},
    "teacher_cache_backend": {"teacher_cache_backend": "onnx"},
    "teacher_cache_top_k": {"teacher_cache_top_k": 2},
    "teacher_cache_batch_size": {"teacher_cache_batch_size": 8},
    "quantization_aware": {"quantization_aware": True},
    "layer_mapping": {"layer_mapping": "last"},
    "token_soft_positions": {"token_soft_positions": "tokens"},
    **{
        f"{name}_{part}": {f"{name}_schedule": "linear", f"{name}_end": _SCHEDULE_ENDS.get(name, 1.0)}
        for name in _SCHEDULED
        for part in ("schedule", "end")
    },
}


def test_the_settings_are_the_fields_the_distillation_arguments_add():
    names = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    # StageTrainingArguments only brings back the two training fields transformers 5 removed.
    restored = {"overwrite_output_dir", "warmup_ratio"}
    assert names(StageTrainingArguments) - names(TrainingArguments) <= restored
    expected = names(DistillationTrainingArguments) - names(TrainingArguments) - restored - NOT_SETTINGS
    assert set(SETTINGS) == expected and len(SETTINGS) == len(expected)
    assert {"relation_weight", "augmentation", "teacher_weights", "quantization_aware"} <= set(SETTINGS)
    assert set(CHANGEABLE_ON_RESUME) <= set(SETTINGS)
    assert distillation_fields(StageTrainingArguments) == ()  # a fine-tuning stage has none
    # Scheduled settings: LossSettings' fields, each with its _schedule and _end field.
    scheduled = {f.name for f in dataclasses.fields(LossSettings)}
    assert scheduled == set(_SCHEDULED) == {n for n in SETTINGS if f"{n}_schedule" in SETTINGS}


@pytest.mark.parametrize("name", SETTINGS)
def test_every_changed_setting_is_reported_on_resume(tmp_path, name):
    base = DistillationTrainingArguments(output_dir=str(tmp_path))
    changed = DistillationTrainingArguments(output_dir=str(tmp_path), **CHANGES[name])
    assert getattr(changed, name) != getattr(base, name)
    recorded = json.loads(json.dumps(run_settings(base), default=str))  # as read back from output_dir
    assert settings_changes(recorded, run_settings(base)) == {}
    changes = settings_changes(recorded, run_settings(changed))
    if name in CHANGEABLE_ON_RESUME:
        assert changes == {}
    else:
        assert changes[name] == [getattr(base, name), getattr(changed, name)]


def test_settings_missing_from_an_older_record_are_not_compared(tmp_path):
    args = DistillationTrainingArguments(output_dir=str(tmp_path), relation_weight=0.5, temperature=3.0)
    recorded = run_settings(DistillationTrainingArguments(output_dir=str(tmp_path)))
    del recorded["distillation"]["relation_weight"]  # written before relation_weight was recorded
    assert settings_changes(recorded, run_settings(args)) == {"temperature": [2.0, 3.0]}


def test_resuming_with_another_relation_weight_is_refused(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    out = tmp_path / "student"
    argv = [
        "distill", "--teacher", str(teacher), "--dataset", str(data), "--output_dir", str(out),
        "--student_layers", "2", "--per_device_train_batch_size", "8", "--report_to", "none",
        "--use_cpu", "true", "--disable_tqdm", "true", "--seed", "0", "--save_steps", "2",
    ]  # fmt: skip
    assert main([*argv, "--max_steps", "2"]) == 0
    recorded = json.loads((out / "distilnlp_run_settings.json").read_text())["distillation"]
    assert recorded == run_settings(DistillationTrainingArguments(output_dir=str(out)))["distillation"]
    results = json.loads((out / "distill_results.json").read_text())
    assert results["distillation_settings"] == recorded
    card = (out / "README.md").read_text()
    assert "| relation_weight | 0.0 |" in card and "| augmentation | none |" in card

    capsys.readouterr()
    assert main([*argv, "--max_steps", "4", "--relation_weight", "0.5"]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
    assert "relation_weight 0.0 in the checkpoint, 0.5 now" in error
    assert "--allow_changed_settings true" in error
