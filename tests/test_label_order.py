"""Teachers and the task are aligned by class name: a teacher listing the task's classes in another order is
reordered (live, in an ensemble, from a cache, in the CLI); other class names are a one-line error."""

import copy
import json

import pytest
import torch
from test_teachers import make_trainer, teachers_and_student, unlabelled_batch
from tiny import pad_collate, save_tiny_model, tiny_tokenizer, token_dataset, write_topic_csv
from transformers import BertForSequenceClassification

from distilnlp.commands.cli import main
from distilnlp.distill.teachers import label_permutation

NAMES = ["alpha", "beta", "gamma"]
PERMUTED = [2, 0, 1]  # the permuted teacher's class j is the aligned teacher's class PERMUTED[j]


def named(model, names):
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    return model


def permuted(teacher):
    """The same teacher with its classes listed (and its head's rows stored) in the PERMUTED order."""
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.classifier.weight.copy_(teacher.classifier.weight[PERMUTED])
        other.classifier.bias.copy_(teacher.classifier.bias[PERMUTED])
    return named(other, [NAMES[i] for i in PERMUTED])


def test_label_permutation_maps_names_accepts_placeholders_and_rejects_other_classes():
    assert label_permutation(["gamma", "alpha", "beta"], NAMES) == [1, 2, 0]
    assert label_permutation(NAMES, NAMES) is None
    assert label_permutation(["LABEL_0", "LABEL_1", "LABEL_2"], NAMES) is None  # by index, as before
    with pytest.raises(ValueError) as error:
        label_permutation(["alpha", "beta", "delta"], NAMES)
    assert str(error.value).startswith("The teacher predicts the classes ['alpha', 'beta', 'delta'] but the ")
    assert "task has ['alpha', 'beta', 'gamma']" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"\['LABEL_0', 'LABEL_1'\] but the task has"):
        label_permutation(["LABEL_0", "LABEL_1"], NAMES)


def test_a_permuted_teacher_gives_the_aligned_teachers_soft_loss_live_in_an_ensemble_and_cached(
    tmp_path, caplog
):
    (teacher, other), student = teachers_and_student(count=2)
    named(teacher, NAMES), named(other, NAMES), named(student, NAMES)
    batch = unlabelled_batch()
    student.eval()
    aligned = make_trainer(tmp_path / "a", teacher, student).compute_loss(student, batch).item()
    caplog.set_level("INFO", logger="distilnlp")
    live = make_trainer(tmp_path / "p", permuted(teacher), student).compute_loss(student, batch).item()
    assert live == pytest.approx(aligned, rel=1e-6)
    assert "Teacher 0 lists the task's classes in another order" in caplog.text
    # Without the alignment the permuted teacher's loss differs (the test would catch index alignment).
    unaligned = make_trainer(tmp_path / "u", named(permuted(teacher), NAMES), student)
    assert unaligned.compute_loss(student, batch).item() != pytest.approx(aligned, rel=1e-3)

    # An ensemble mixes probabilities class by class, by name.
    mixed = make_trainer(tmp_path / "e", [teacher, other], student).compute_loss(student, batch).item()
    ensemble = make_trainer(tmp_path / "f", [permuted(teacher), other], student)
    assert ensemble.compute_loss(student, batch).item() == pytest.approx(mixed, rel=1e-6)

    # A cache holds the teacher's own order; the trainer reorders it (with or without the live teacher).
    data = token_dataset(8, seed=5)
    cache = str(tmp_path / "cache")
    built = make_trainer(tmp_path / "c", permuted(teacher), student, data, teacher_cache=cache)
    offline = make_trainer(tmp_path / "o", None, student, data, teacher_cache=cache)
    rows = built.train_dataset.select(range(6))
    inputs = pad_collate([{k: r[k] for k in ("input_ids", "attention_mask")} for r in rows])
    expected = make_trainer(tmp_path / "r", teacher, student, data).compute_loss(student, inputs).item()
    for trainer in (built, offline):
        cached = dict(inputs, teacher_logits=torch.tensor(rows["teacher_logits"]))
        assert trainer.compute_loss(student, cached).item() == pytest.approx(expected, rel=1e-5)


def test_a_teacher_or_ensemble_member_with_other_class_names_is_one_line(tmp_path):
    (teacher, other), student = teachers_and_student(count=2)
    named(teacher, NAMES), named(student, NAMES), named(other, ["alpha", "beta", "delta"])
    with pytest.raises(ValueError) as error:
        make_trainer(tmp_path, [teacher, other], student)
    message = str(error.value)
    assert message.startswith("Teacher 1 predicts the classes ['alpha', 'beta', 'delta'] but the task has")
    assert "['alpha', 'beta', 'gamma']" in message and "\n" not in message


def test_distill_cli_with_a_permuted_teacher_matches_the_aligned_teacher(tmp_path, capsys):
    data = write_topic_csv(tmp_path / "topics.csv", n=60)  # classes alpha, beta, gamma
    aligned = save_tiny_model(tmp_path / "aligned", id2label=dict(enumerate(NAMES)))
    permuted(BertForSequenceClassification.from_pretrained(aligned)).save_pretrained(tmp_path / "permuted")
    tiny_tokenizer(tmp_path / "permuted")
    results = {}
    for name in ("aligned", "permuted"):
        out = tmp_path / f"student-{name}"
        argv = [
            "distill", "--teacher", str(tmp_path / name), "--dataset", str(data), "--output_dir", str(out),
            "--student_layers", "2", "--max_steps", "3", "--per_device_train_batch_size", "8",
            "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--seed", "0",
        ]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        results[name] = json.loads((out / "distill_results.json").read_text())
        saved = json.loads((out / "config.json").read_text())["id2label"]
        assert [saved[str(i)] for i in range(3)] == NAMES  # the task's order, whatever the teacher's
    for key in ("teacher_test_accuracy", "teacher_test_loss", "student_test_accuracy", "student_test_loss"):
        assert results["permuted"][key] == pytest.approx(results["aligned"][key], rel=1e-5), key

    other = save_tiny_model(tmp_path / "other", id2label={0: "alpha", 1: "beta", 2: "delta"})
    assert (
        main(
            ["distill", "--teacher", str(other), "--dataset", str(data), "--output_dir", str(tmp_path / "x")]
        )
        == 1
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"The teacher {other} predicts the classes ['alpha', 'beta', 'delta'] but the task has" in error
