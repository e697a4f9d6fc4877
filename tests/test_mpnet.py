"""An MPNet teacher (all-mpnet-base-v2's architecture, tiny and random here) through the paths a user takes:
distilled into a student of another architecture and tokenizer (the any-teacher path), and into its own layer
copies (`create_student`, covered with the export in test_student / test_export_architectures)."""

from __future__ import annotations

import json

import torch
from test_cross_tokenizer import cli_argv, save_student
from tiny import tiny_tokenizer
from transformers import MPNetConfig, MPNetForSequenceClassification

from distilnlp.commands.cli import main
from distilnlp.distill.student import create_student


def save_mpnet_teacher(folder, num_labels=3):
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)  # fmt: skip
    model = MPNetForSequenceClassification(config)
    model.config.id2label = {0: "alpha", 1: "beta", 2: "gamma"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(folder)
    tiny_tokenizer(folder)
    return folder


def test_an_mpnet_teacher_distills_into_a_bert_student_with_another_tokenizer(tmp_path):
    teacher = save_mpnet_teacher(tmp_path / "mpnet")
    student = save_student(tmp_path / "student")  # a BERT with its own (other) vocabulary
    assert main(cli_argv(tmp_path, teacher, student)) == 0
    results = json.loads((tmp_path / "run" / "distill_results.json").read_text())
    assert results["cross_tokenizer"] is True and 0 <= results["teacher_test_accuracy"] <= 1


def test_mpnet_layer_copies_reproduce_the_teacher_when_all_layers_are_kept():
    torch.manual_seed(0)
    teacher = MPNetForSequenceClassification(MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4,
                                                         num_attention_heads=4, intermediate_size=37)).eval()  # fmt: skip
    same = create_student(teacher, 4).eval()
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(same(input_ids=ids).logits, teacher(input_ids=ids).logits)
    assert create_student(teacher, 2).config.distilnlp_teacher_layers == [1, 3]
