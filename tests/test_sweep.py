"""`distilnlp sweep`: the frontier / choice logic on hand-made points, and the command end to end on tiny models."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from tiny import save_tiny_model, write_topic_csv

import distilnlp.commands.cli as cli
import distilnlp.commands.config as config
import distilnlp.commands.sweep as sweep_module
from distilnlp.benchmark.frontier import choose_model, pareto_front
from distilnlp.commands.cli import main
from distilnlp.commands.config import parse_config
from distilnlp.commands.sweep import SWEEP_TYPES, parse_depths, variant_config


def point(name, accuracy, latency, size, candidate=True):
    return {
        "name": name,
        "accuracy": accuracy,
        "latency_p50_ms": latency,
        "size_mb": size,
        "candidate": candidate,
    }


POINTS = [
    point("teacher", 0.90, 20.0, 90.0, candidate=False),
    point("1L fp32", 0.86, 2.0, 50.0),
    point("1L int8", 0.87, 1.0, 13.0),  # dominates 1L fp32: more accurate and faster
    point("2L fp32", 0.89, 4.0, 60.0),
    point("2L int8", 0.885, 2.0, 16.0),
    point("3L int8", 0.885, 3.0, 19.0),  # as accurate as 2L int8 but slower: off the front
]


def test_pareto_front_keeps_exactly_the_undominated_points():
    on = dict(zip([p["name"] for p in POINTS], pareto_front(POINTS), strict=True))
    assert on == {
        "teacher": True,
        "1L fp32": False,
        "1L int8": True,
        "2L fp32": True,
        "2L int8": True,
        "3L int8": False,
    }
    twins = [point("a", 0.5, 1.0, 1.0), point("b", 0.5, 1.0, 2.0)]
    assert pareto_front(twins) == [True, True]  # equal points do not dominate each other


def test_choice_is_the_smallest_model_meeting_min_retention():
    # 0.98 x 0.90 = 0.882: 2L fp32, 2L int8 and 3L int8 qualify; 2L int8 is the smallest file.
    chosen = choose_model(POINTS, 0.90, 0.98)
    assert chosen["name"] == "2L int8" and chosen["meets_min_retention"]
    # 0.95 x 0.90 = 0.855: every student qualifies, 1L int8 is the smallest.
    assert choose_model(POINTS, 0.90, 0.95)["name"] == "1L int8"
    # A size tie goes to the lower latency.
    tie = [point("slow", 0.9, 3.0, 10.0), point("fast", 0.9, 2.0, 10.0)]
    assert choose_model(tie, 0.9, 0.985)["name"] == "fast"


def test_when_no_model_meets_min_retention_the_most_accurate_is_named_and_it_says_so():
    chosen = choose_model(
        POINTS, 0.90, 0.999
    )  # needs 0.8991: no student has it, the teacher is not a candidate
    assert chosen["name"] == "2L fp32" and not chosen["meets_min_retention"]
    assert "NO model meets min_retention" in chosen["reason"]
    with pytest.raises(ValueError, match="No candidate"):
        choose_model([POINTS[0]], 0.9, 0.9)


def test_depth_lists_are_parsed_and_checked():
    assert parse_depths("3,1,2,1") == [1, 2, 3]
    assert parse_depths(2) == [2]
    assert parse_depths([3, 1]) == parse_depths(["1,3"]) == [1, 3]
    for bad in ("0,1", "one", None, [], ["1", "x"]):
        with pytest.raises(ValueError):
            parse_depths(bad)


@pytest.mark.parametrize(
    ("recipe_value", "flags", "depths"),
    [
        ("1,2,3", [], [1, 2, 3]),  # the text form of the recipes on disk
        ([3, 1, 2], [], [1, 2, 3]),
        (2, [], [2]),  # a distill recipe's one depth
        (1, ["--student_layers", "2,1"], [1, 2]),
        (1, ["--student_layers", "3", "1"], [1, 3]),
        (1, ["--student_layers=-1,2"], "must all be >= 1, got '-1,2'"),
    ],
)
def test_student_layers_is_a_typed_list_from_text_lists_or_flags(tmp_path, recipe_value, flags, depths):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"teacher": "t", "student_layers": recipe_value}))
    if isinstance(depths, str):
        with pytest.raises(ValueError, match=depths):
            parse_config(SWEEP_TYPES, [str(recipe), *flags])
        return
    assert parse_config(SWEEP_TYPES, [str(recipe), *flags])[0].student_layers == depths


def old_variant_config(argv, output_dir, depth, qat_from, teacher, sweep_args):
    """The variant configs as the sweep made them before parse-once: its argv with flags appended, parsed again."""
    extra = ["--output_dir", str(output_dir), "--quantization_aware", str(qat_from is not None).lower()]
    extra += ["--teacher", teacher] if teacher else []
    if qat_from is not None:
        extra += ["--student", str(qat_from), "--num_train_epochs", str(sweep_args.quantization_aware_epochs)]
        extra += ["--learning_rate", str(sweep_args.quantization_aware_learning_rate)]
    distill_args, data_args, args, _ = parse_config(SWEEP_TYPES, [*argv, *extra])
    return distill_args.for_depth(depth), data_args, args


@pytest.mark.parametrize("student_layers", [None, "1,2", [1, 2]])
def test_variant_configs_equal_what_the_old_argv_path_parsed(tmp_path, student_layers):
    if student_layers is None:  # a bundled recipe (warmup_ratio, save/eval steps) with the depths as a flag
        argv = ["distill_bbc_news", "--student_layers", "1,2"]
    else:
        recipe = tmp_path / "r.yaml"
        values = {
            "teacher": "t",
            "student_layers": student_layers,
            "warmup_ratio": 0.1,
            "quantization_aware": True,
        }
        recipe.write_text(yaml.safe_dump(values | {"eval_strategy": "steps", "logging_steps": 5}))
        argv = [str(recipe)]
    argv += [
        "--output_dir",
        str(tmp_path / "sweep"),
        "--learning_rate",
        "1e-3",
        "--quantization_aware_epochs",
        "2",
    ]
    parsed = parse_config(SWEEP_TYPES, argv)
    out = tmp_path / "sweep"
    for depth in (1, 2):
        for qat_from in (None, out / f"layers-{depth}" / "student"):
            for teacher in (None, str(out / "teacher")):
                folder = out / f"layers-{depth}" / ("student-qat" if qat_from else "student")
                new = variant_config(parsed, folder, depth, qat_from, teacher)
                old = old_variant_config(argv, folder, depth, qat_from, teacher, parsed[3])
                for name in ("output_dir", "quantization_aware", "num_train_epochs", "learning_rate"):
                    assert getattr(new[2], name) == getattr(old[2], name), name
                for name in ("student", "teacher", "student_layers"):
                    assert getattr(new[0], name) == getattr(old[0], name), name
                # Every field, derived ones included (`replace` re-runs __post_init__: warmup_ratio's
                # warmup_steps, eval_steps from logging_steps).
                assert new == old and new[2].to_dict() == old[2].to_dict()
    assert new[2].num_train_epochs == 2.0 and new[2].learning_rate == 3e-5 and new[2].quantization_aware
    # The parsed config is untouched.
    assert parsed[2].learning_rate == 1e-3 and parsed[2].output_dir == str(out)
    if student_layers is not None:  # a copy keeps warmup_ratio's translation; both set is still refused
        assert dataclasses.replace(parsed[2], output_dir="x").warmup_steps == 0.1
        with pytest.raises(ValueError, match="not both"):
            dataclasses.replace(parsed[2], warmup_steps=5)


def test_the_sweep_command_parses_its_config_once(tmp_path, monkeypatch, capsys):
    calls = []
    real_parse_config = config.parse_config

    def counting_parse_config(*args, **kwargs):
        calls.append(args)
        return real_parse_config(*args, **kwargs)

    for module in (cli, config, sweep_module):
        monkeypatch.setattr(module, "parse_config", counting_parse_config, raising=False)

    def fake_sweep(distill_args, data_args, args, sweep_args):
        # Every variant config the real sweep makes, without training.
        parsed = (distill_args, data_args, args, sweep_args)
        for depth in distill_args.student_layers:
            for qat_from in (None, tmp_path / "fp32"):
                variant_config(parsed, tmp_path / "variant", depth, qat_from, None)
        received.append(parsed)
        return {"chosen": {"name": "1L int8 PTQ", "meets_min_retention": True}}

    received = []
    monkeypatch.setattr(sweep_module, "sweep", fake_sweep)
    argv = ["sweep", "distill_bbc_news", "--student_layers", "1,2", "--output_dir", str(tmp_path)]
    assert main(argv) == 0
    assert len(calls) == 1 and "chosen model: 1L int8 PTQ" in capsys.readouterr().out
    distill_args, _, args, sweep_args = received[0]
    assert distill_args.student_layers == [1, 2] and args.output_dir == str(tmp_path)
    assert dataclasses.is_dataclass(sweep_args) and Path(args.output_dir) == tmp_path


@pytest.mark.slow
def test_sweep_over_two_depths_writes_table_plot_and_choice_and_a_rerun_reuses_everything(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3, layers=4, initializer_range=0.2)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "teacher": str(teacher),
                "dataset": str(data),
                "max_length": 32,
                "max_steps": 3,
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-3,
                "hidden_weight": 1.0,
                "save_strategy": "no",
                "report_to": "none",
                "use_cpu": True,
                "disable_tqdm": True,
            }
        )
    )
    out = tmp_path / "sweep"
    argv = ["sweep", str(recipe), "--student_layers", "1,2", "--output_dir", str(out)]
    argv += ["--min_agreement", "0.5", "--max_accuracy_drop", "1.0", "--parity_samples", "6"]
    argv += ["--latency_runs", "3", "--throughput_runs", "1", "--min_retention", "0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[sweep] 2 layer(s): distilling the quantization-aware student" in printed
    assert "chosen model" in printed

    result = json.loads((out / "sweep.json").read_text())
    names = [p["name"] for p in result["points"]]
    assert names == [
        "teacher",
        "1L fp32",
        "1L int8 PTQ",
        "1L int8 QAT",
        "2L fp32",
        "2L int8 PTQ",
        "2L int8 QAT",
    ]
    assert any(p["on_pareto_front"] for p in result["points"])
    assert all(0 <= p["accuracy"] <= 1 and p["latency_p50_ms"] > 0 for p in result["points"])
    assert result["chosen"]["name"] in names[1:]
    # The quantization-aware student went on from the distilled fp32 one: 3 Adam steps at 3e-5 move each weight
    # by at most ~1e-4, while a fresh copy of teacher layers differs from it by far more.
    fp32, qat = (
        load_file(out / "layers-1" / name / "model.safetensors") for name in ("student", "student-qat")
    )
    assert max((qat[k] - fp32[k]).abs().max().item() for k in fp32) < 3e-4
    qat_results = json.loads((out / "layers-1" / "student-qat" / "distill_results.json").read_text())
    assert qat_results["training"]["learning_rate"] == 3e-5
    assert json.loads((out / "layers-1" / "student-qat" / "config.json").read_text())[
        "distilnlp_quantization_aware"
    ]
    table = (out / "sweep.md").read_text()
    assert "| Pareto front |" in table and "**(chosen)**" in table
    assert (out / "sweep.png").stat().st_size > 0

    assert main(argv) == 0  # a second run distills and exports nothing again
    printed = capsys.readouterr().out
    assert "distilling" not in printed and "exporting" not in printed
    assert "reusing the export" in printed
