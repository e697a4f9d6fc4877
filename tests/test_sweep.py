"""`distilnlp sweep`: the frontier / choice logic on hand-made points, and the command end to end on tiny models."""

import json

import pytest
import yaml
from safetensors.torch import load_file
from tiny import save_tiny_model, write_topic_csv

from distilnlp.commands.cli import main
from distilnlp.commands.sweep import parse_depths
from distilnlp.frontier import choose_model, pareto_front


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
    for bad in ("0,1", "one", None):
        with pytest.raises(ValueError):
            parse_depths(bad)


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
