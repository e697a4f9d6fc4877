"""The demo end to end on the real packaged MiniLM teacher and BBC News, with a tiny training budget."""

import json

import pytest
from transformers import AutoModelForSequenceClassification

from distilnlp.commands.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_on_the_real_teacher_and_leaves_every_artifact(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--output_dir",
        str(out),
        "--max_train_samples",
        "96",
        "--teacher_epochs",
        "1",
        "--student_epochs",
        "1",
        "--latency_runs",
        "5",
        "--static_quantization",
        "false",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for stage in (
        "[1/4]",
        "[2/4]",
        "[3/4]",
        "[4/4]",
        "| teacher (PyTorch fp32) |",
        "| student (ONNX int8 dynamic) |",
    ):
        assert stage in printed, stage

    teacher = AutoModelForSequenceClassification.from_pretrained(out / "teacher")
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert teacher.config.num_hidden_layers == 6 and student.config.num_hidden_layers == 1
    assert teacher.config.id2label == student.config.id2label and len(teacher.config.id2label) == 5
    for artifact in (
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
        "onnx/distilnlp_export.json",
        "benchmark/benchmark.json",
        "benchmark/benchmark.md",
        "benchmark/benchmark.png",
        "demo_results.json",
        "demo_results.md",
        "student/README.md",
    ):
        assert (out / artifact).is_file(), artifact
    results = json.loads((out / "demo_results.json").read_text())
    assert [s["name"] for s in results["benchmark"]["stages"]][-1] == "student (ONNX int8 dynamic)"
    assert results["distillation"]["student_test_accuracy"] > 0.2  # 5 classes: better than chance

    # A second run reuses every finished stage instead of training again.
    assert main(argv) == 0
    assert "[1/4]" not in capsys.readouterr().out


def old_stage_config(recipe, dataclass_types, **overrides):
    """The demo's stage configs as it made them before parse-once: `--name value` flags after the recipe."""
    from distilnlp.commands.config import parse_config
    from distilnlp.commands.recipes import resolve_recipe

    flags = [t for name, v in overrides.items() if v is not None for t in (f"--{name}", str(v))]
    return parse_config(dataclass_types, [str(resolve_recipe(recipe)), *flags])


def test_stage_configs_equal_what_the_old_flag_strings_parsed(tmp_path):
    from distilnlp.commands.arguments import DistillArguments, FinetuneArguments
    from distilnlp.commands.demo import stage_config
    from distilnlp.data import DataArguments
    from distilnlp.distill.arguments import DistillationTrainingArguments
    from distilnlp.distill.stage_arguments import StageTrainingArguments

    teacher_less = tmp_path / "distill.yaml"  # the demo's --teacher makes it valid, as the flag did
    teacher_less.write_text("dataset: bbc_news\nstudent_layers: 2\nwarmup_ratio: 0.1\n")
    stages = [
        ("finetune_bbc_news", (FinetuneArguments, DataArguments, StageTrainingArguments)),
        ("distill_bbc_news", (DistillArguments, DataArguments, DistillationTrainingArguments)),
        (str(teacher_less), (DistillArguments, DataArguments, DistillationTrainingArguments)),
    ]
    for recipe, types in stages:
        overrides = dict(output_dir=tmp_path / "stage", num_train_epochs=1.5, max_train_samples=None)
        overrides["overwrite_output_dir"] = True
        if types[0] is DistillArguments:
            overrides |= dict(teacher=tmp_path / "teacher", student_layers=3)
        new, old = stage_config(recipe, types, **overrides), old_stage_config(recipe, types, **overrides)
        assert new == old and new[-1].to_dict() == old[-1].to_dict()
        assert new[-1].output_dir == str(tmp_path / "stage") and new[-1].num_train_epochs == 1.5
    assert new[0].teacher == [str(tmp_path / "teacher")] and new[0].student_layers == 3
    with pytest.raises(ValueError, match="unknown field 'epochs'"):
        stage_config("finetune_bbc_news", stages[0][1], epochs=1)
