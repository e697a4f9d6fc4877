"""The `distilnlp` command line: recipes + flag overrides, finetune and distill end to end on tiny models."""

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from tiny import save_tiny_model, write_topic_csv
from transformers import AutoModelForSequenceClassification

import distilnlp
from distilnlp.commands.arguments import DistillArguments, FinetuneArguments
from distilnlp.commands.cli import main
from distilnlp.commands.config import parse_config
from distilnlp.data import DataArguments
from distilnlp.distill.arguments import DistillationTrainingArguments
from distilnlp.distill.stage_arguments import StageTrainingArguments

RECIPES = Path(__file__).parent.parent / "recipes"
DISTILL_TYPES = (DistillArguments, DataArguments, DistillationTrainingArguments)


def write_recipe(path, **values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize(
    "flags",
    [
        [
            "--teacher",
            "t1,t2",
            "--teacher_weights",
            "1,3",
            "--relation_types",
            "Q,k",
            "--layer_mapping",
            "1:2,2:4",
        ],
        [
            "--teacher",
            "t1",
            "t2",
            "--teacher_weights",
            "1",
            "3",
            "--relation_types",
            "q",
            "k",
            "--layer_mapping",
            "1:2",
            "2:4",
        ],
    ],
)
def test_list_options_take_commas_or_spaces_and_become_typed_lists(tmp_path, flags):
    distill_args, _, args = parse_config(DISTILL_TYPES, [*flags, "--output_dir", str(tmp_path)])
    assert distill_args.teachers == ["t1", "t2"] and args.teacher_weights == [1.0, 3.0]
    assert args.relation_types == ["q", "k"] and args.layer_mapping == ["1:2", "2:4"]
    assert args.parsed_layer_mapping.pairs == ((1, 2), (2, 4))
    recipe = write_recipe(
        tmp_path / "r.yaml",
        teacher=["t1", "t2"],
        teacher_weights="1,3",
        relation_types=["q", "k"],
        layer_mapping="1:2,2:4",
        output_dir=str(tmp_path),
    )
    from_recipe = parse_config(DISTILL_TYPES, [recipe])
    assert from_recipe[0].teacher == distill_args.teacher
    for name in ("teacher_weights", "relation_types", "layer_mapping"):
        assert getattr(from_recipe[2], name) == getattr(args, name), name


@pytest.mark.parametrize("teacher", ["t1,,t2", ["t1", ""], "t1,"])
def test_an_empty_teacher_folder_name_is_an_error(teacher):
    with pytest.raises(ValueError, match="an empty folder name between commas"):
        DistillArguments(teacher=teacher)


def test_flags_override_the_recipe(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        teacher="t",
        temperature=4.0,
        alpha=0.2,
        output_dir=str(tmp_path),
        bf16=False,
        report_to=["none"],
        lr_scheduler_kwargs={"num_cycles": 2},
    )
    distill_args, data_args, args = parse_config(
        DISTILL_TYPES, [recipe, "--alpha", "0.9", "--max_length", "64"]
    )
    assert distill_args.teacher == ["t"]
    assert args.temperature == 4.0  # from the recipe
    assert args.alpha == 0.9  # the flag wins
    assert data_args.max_length == 64
    assert args.report_to == [] or args.report_to == ["none"] or args.report_to == "none"
    assert args.lr_scheduler_kwargs == {"num_cycles": 2}


def test_unknown_recipe_field_is_named_with_a_suggestion(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", teacher="t", temprature=3.0)
    with pytest.raises(ValueError, match="unknown field 'temprature'. Did you mean 'temperature'"):
        parse_config(DISTILL_TYPES, [recipe])


def test_recipe_values_are_validated_like_flags(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", teacher="t", output_dir=str(tmp_path), attention_loss="cka")
    with pytest.raises(ValueError, match=r"attention_loss must be one of \['kl', 'mse'\], got 'cka'"):
        parse_config(DISTILL_TYPES, [recipe])


@pytest.mark.parametrize(
    ("name", "types"),
    [
        ("finetune_bbc_news.yaml", (FinetuneArguments, DataArguments, StageTrainingArguments)),
        ("distill_bbc_news.yaml", DISTILL_TYPES),
    ],
)
def test_bundled_recipes_parse(name, types, tmp_path):
    parsed = parse_config(types, [str(RECIPES / name), "--output_dir", str(tmp_path)])
    assert parsed[-1].output_dir == str(tmp_path)


def test_push_to_hub_flags_reach_the_trainer_arguments(tmp_path):
    _, _, args = parse_config(
        DISTILL_TYPES,
        [
            "--teacher",
            "t",
            "--output_dir",
            str(tmp_path),
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "me/student",
            "--hub_private_repo",
            "true",
        ],
    )
    assert args.push_to_hub and args.hub_model_id == "me/student" and args.hub_private_repo


def test_unknown_command_and_help(capsys):
    assert main(["shrink"]) == 2
    assert "unknown command 'shrink'" in capsys.readouterr().err
    assert main([]) == 0
    assert "distill" in capsys.readouterr().out


def test_finetune_then_distill_end_to_end(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "pretrained", num_labels=2)
    data = write_topic_csv(tmp_path / "topics.csv", n=90)
    common = ["--dataset", str(data), "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true"]
    assert (
        main(
            [
                "finetune",
                "--model_name_or_path",
                str(base),
                "--output_dir",
                str(tmp_path / "teacher"),
                "--max_steps",
                "30",
                "--learning_rate",
                "3e-3",
                "--save_strategy",
                "no",
                *common,
            ]
        )
        == 0
    )
    teacher_results = json.loads((tmp_path / "teacher" / "finetune_results.json").read_text())
    assert teacher_results["labels"] == ["alpha", "beta", "gamma"]
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    assert teacher.config.num_labels == 3 and teacher.config.id2label[1] == "beta"

    recipe = write_recipe(
        tmp_path / "distill.yaml",
        teacher=str(tmp_path / "teacher"),
        student_layers=2,
        output_dir=str(tmp_path / "student"),
        max_steps=6,
        save_steps=3,
        hidden_weight=1.0,
        attention_weight=1.0,
        temperature=3.0,
        alpha=0.7,
    )
    assert main(["distill", recipe, *common]) == 0
    assert "student test accuracy" in capsys.readouterr().out
    student_dir = tmp_path / "student"
    results = json.loads((student_dir / "distill_results.json").read_text())
    assert results["student_shape"]["layers"] == 2 and results["teacher_shape"]["layers"] == 4
    assert results["hidden_pairs"] == [[0, 0], [1, 2], [2, 4]]
    assert 0 <= results["student_test_accuracy"] <= 1
    student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    assert student.config.num_hidden_layers == 2 and student.config.distilnlp_teacher_layers == [1, 3]
    assert not any("distillation" in k for k in load_file(str(student_dir / "model.safetensors")))

    card = (student_dir / "README.md").read_text()
    for expected in (
        str(tmp_path / "teacher"),
        "temperature 3.0, alpha = 0.7",
        "| hidden states | mse, weight 1.0 |",
        "| attention maps | kl, weight 1.0 |",
        "`uniform`: student:teacher 0:0, 1:2, 2:4",
        "student accuracy (test)",
        "teacher accuracy (test)",
        "knowledge-distillation",
    ):
        assert expected in card, expected
    data = ModelCard.load(student_dir / "README.md").data  # Hub metadata; a local teacher is no base_model
    assert "distillation" in data.tags and data.base_model is None and data.metrics == ["accuracy", "f1"]
    scores = {r.metric_type: r.metric_value for r in data.eval_results}
    assert scores["accuracy"] == results["student_test_accuracy"]


def test_distill_resumes_from_the_last_checkpoint(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    out = tmp_path / "student"
    argv = [
        "distill",
        "--teacher",
        str(teacher),
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--save_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
    ]
    assert main([*argv, "--max_steps", "2"]) == 0
    assert (out / "checkpoint-2").is_dir()
    assert main([*argv, "--max_steps", "4"]) == 0  # a re-run picks up at step 2
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    losses = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert losses == sorted(set(losses))  # no step trained twice


def test_yaml_no_and_off_stay_words_for_string_fields(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"teacher: t\noutput_dir: {tmp_path}\nsave_strategy: no\nreport_to: none\nbf16: false\n"
    )
    _, _, args = parse_config(DISTILL_TYPES, [str(recipe)])
    assert args.save_strategy == "no" and not args.bf16


def test_recipe_values_are_typed_defaults_and_strings_get_the_flag_type(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", teacher="t", output_dir=str(tmp_path), learning_rate="3e-4", student_layers=2
    )
    distill_args, _, args = parse_config(DISTILL_TYPES, [recipe, "--student_layer_selection", "1,3"])
    assert args.learning_rate == 3e-4 and isinstance(args.learning_rate, float)  # YAML 1.1 reads 3e-4 as text
    assert distill_args.student_layers == 2 and distill_args.layer_selection == [1, 3]


def test_unknown_and_abbreviated_flags_are_errors_with_a_suggestion(tmp_path, capsys):
    base = ["--teacher", "t", "--output_dir", str(tmp_path)]
    for flag in ("--learning_rat", "--temprature"):
        with pytest.raises(SystemExit) as exit_info:
            parse_config(DISTILL_TYPES, [*base, flag, "0.1"])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown flag '--learning_rat'. Did you mean '--learning_rate'" in err
    assert "unknown flag '--temprature'. Did you mean '--temperature'" in err


def test_bundled_recipes_are_found_by_name_and_listed(capsys):
    from distilnlp.commands.recipes import bundled_recipes, resolve_recipe

    names = set(bundled_recipes())
    assert {"finetune_bbc_news", "distill_bbc_news", "distill_bbc_news_offline", "search_bbc_news"} <= names
    assert resolve_recipe("distill_bbc_news") == resolve_recipe("distill_bbc_news.yaml")
    assert resolve_recipe("distill_bbc_news").read_text() == (RECIPES / "distill_bbc_news.yaml").read_text()
    with pytest.raises(FileNotFoundError, match="neither a file nor a bundled recipe"):
        resolve_recipe("no_such_recipe")
    assert main(["recipes"]) == 0
    assert "distill_bbc_news" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"distilnlp {distilnlp.__version__}"


def test_overwrite_output_dir_and_warmup_ratio_work_on_every_transformers_version(tmp_path):
    args = StageTrainingArguments(output_dir=str(tmp_path), overwrite_output_dir=True, warmup_ratio=0.1)
    assert args.overwrite_output_dir
    # transformers 4.57 keeps warmup_ratio itself; 5.x takes the fraction as warmup_steps.
    assert args.warmup_ratio == 0.1 or args.warmup_steps == 0.1
    assert args.get_warmup_steps(100) == 10
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0, 1\)"):
        StageTrainingArguments(output_dir=str(tmp_path), warmup_ratio=1.5)
