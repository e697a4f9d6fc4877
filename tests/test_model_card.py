"""The student's model card: a `huggingface_hub.ModelCard` whose metadata (base model, tags, metrics,
model-index) and tables come from the summary and scores that distill_results.json holds, also on push."""

from types import SimpleNamespace

import pytest
from huggingface_hub import ModelCard
from tiny import pad_collate, quick_distillation_args, tiny_pair, token_dataset

from distilnlp import DistillationTrainer

TEACHERS = ("google-bert/bert-base-uncased", "FacebookAI/roberta-base")


@pytest.fixture
def trainer(tmp_path):
    """Two teachers (weights 1:3, Hub names) and a student; not trained: the card needs none."""
    teacher, student = tiny_pair(seed=0)
    other, _ = tiny_pair(seed=1)
    for model, name in zip((teacher, other), TEACHERS, strict=True):
        model.config._name_or_path = name
    args = quick_distillation_args(tmp_path, teacher_weights="1,3", hidden_weight=1.0)
    return DistillationTrainer(
        model=student,
        teacher_model=[teacher, other],
        args=args,
        train_dataset=token_dataset(8),
        data_collator=pad_collate,
    )


def results_of(trainer, **changed):
    """What `distilnlp distill` records: the summary, test scores and the data record."""
    return {
        **trainer.distillation_summary(changed),
        "student_test_accuracy": 0.75,
        "student_test_f1": 0.5,
        "teacher_test_accuracy": 0.875,
        "data": {"dataset": "bbc_news"},
    }


def test_card_metadata_and_tables_come_from_the_results(trainer):
    results = results_of(trainer, temperature=[2.0, 4.0])
    assert results["ensemble"]["weights"] == [0.25, 0.75]
    assert results["changed_on_resume"] == {"temperature": [2.0, 4.0]}
    trainer.create_model_card(results=results)
    card = ModelCard.load(f"{trainer.args.output_dir}/README.md")
    data = card.data
    assert data.base_model == TEACHERS[0]  # the feature teacher
    assert {"distillation", "knowledge-distillation", "distilnlp"} <= set(data.tags)
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.model_name == "run" and data.metrics == ["accuracy", "f1"]
    scores = {(r.metric_type, r.dataset_name, r.dataset_split): r.metric_value for r in data.eval_results}
    assert scores == {("accuracy", "bbc_news", "test"): 0.75, ("f1", "bbc_news", "test"): 0.5}
    for expected in (
        "| temperature (changed on resume) | 2.0 before the resumed checkpoint, 4.0 after |",
        "weighted mean of 2 teachers' probabilities, weights [0.25, 0.75]; features from teacher 0",
        "| hidden states | mse, weight 1.0 |",
        "| student accuracy (test) | 0.7500 |",
        "| teacher accuracy (test) | 0.8750 |",
        "| teacher_weights | 1.0,3.0 |",
    ):
        assert expected in card.text, expected


def test_card_without_scores_or_hub_teacher_has_no_model_index(trainer, tmp_path):
    trainer.teacher_model.config._name_or_path = str(tmp_path)  # a local folder is no base model
    trainer.create_model_card()
    card = ModelCard.load(f"{trainer.args.output_dir}/README.md")
    assert card.data.base_model is None and card.data.eval_results is None and card.data.metrics is None
    assert "## Results" not in card.text and "(changed on resume)" not in card.text
    assert "## Distillation arguments" in card.text


def test_push_to_hub_uploads_the_card_of_the_results(trainer, monkeypatch):
    uploaded = {}

    def upload_folder(folder_path, **kwargs):
        uploaded["card"] = ModelCard.load(f"{folder_path}/README.md")

    monkeypatch.setattr("transformers.trainer.hf_api", lambda: SimpleNamespace(upload_folder=upload_folder))
    trainer.hub_model_id = "me/student"
    trainer.push_to_hub(results=results_of(trainer), tags=["extra"])
    card = uploaded["card"]
    assert card.data.base_model == TEACHERS[0] and "extra" in card.data.tags
    assert "| student macro-F1 (test) | 0.5000 |" in card.text
