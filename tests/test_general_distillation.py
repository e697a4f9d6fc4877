"""General (task-agnostic) distillation: the loss against a hand computation, the streamed corpus, and the
command's output as a `distill --student` folder."""

from __future__ import annotations

import json
import tracemalloc

import pytest
import torch
from tiny import bert_config, save_tiny_model, tiny_tokenizer, write_topic_csv
from transformers import AutoModelForSequenceClassification, BertModel

from distilnlp.commands.cli import main
from distilnlp.data.corpus import corpus_dataset, corpus_windows
from distilnlp.distill.general import GeneralDistillationArguments, GeneralDistillationTrainer
from distilnlp.distill.losses.hidden import hidden_mse_loss
from distilnlp.distill.losses.relation import relation_kl_loss
from distilnlp.distill.student import create_random_student, create_student


def general_args(tmp_path, **overrides) -> GeneralDistillationArguments:
    values = dict(
        output_dir=str(tmp_path / "general"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0,
    )  # fmt: skip
    return GeneralDistillationArguments(**(values | overrides))


def padded_batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding in two rows: the loss must ignore those keys and query rows
    mask[2, 4:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def qkv(model: BertModel, inputs: dict, layer: int) -> dict[str, torch.Tensor]:
    """Q, K, V (B, L, H) of 1-based encoder `layer`, recomputed from the layer's input hidden states."""
    hidden = model(**inputs, output_hidden_states=True).hidden_states[layer - 1]
    attention = model.encoder.layer[layer - 1].attention.self
    return {"q": attention.query(hidden), "k": attention.key(hidden), "v": attention.value(hidden)}


@pytest.mark.parametrize("hidden_weight", [0.0, 0.5])
def test_general_loss_equals_the_relation_loss_of_the_same_layers_by_hand(tmp_path, hidden_weight):
    torch.manual_seed(0)
    teacher = BertModel(bert_config(layers=4))
    student = create_student(teacher, 2)  # teacher layers 2 and 4 (0-based 1, 3)
    with torch.no_grad():  # a student that differs from the layers it copied, so the loss is not ~0
        for parameter in student.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    args = general_args(tmp_path, relation_layers="1:2,2:4", relation_heads=8, hidden_weight=hidden_weight)
    trainer = GeneralDistillationTrainer(model=student, teacher_model=teacher, args=args)
    student.eval()
    inputs = padded_batch()
    with torch.no_grad():
        loss = trainer.compute_loss(student, inputs)

        mask = inputs["attention_mask"]
        terms = []
        for s, t in ((1, 2), (2, 4)):
            ours, theirs = qkv(student, inputs, s), qkv(teacher, inputs, t)
            terms += [relation_kl_loss(ours[k], theirs[k], mask, 8, reduction="mean") for k in "qkv"]
        expected = torch.stack(terms).mean()
        if hidden_weight:
            s_hidden = student(**inputs, output_hidden_states=True).hidden_states
            t_hidden = teacher(**inputs, output_hidden_states=True).hidden_states
            pairs = ((0, 0), (1, 2), (2, 4))  # 'uniform' with the embedding output
            hidden = torch.stack([hidden_mse_loss(s_hidden[s], t_hidden[t], mask) for s, t in pairs]).mean()
            expected = expected + hidden_weight * hidden
    assert loss.item() > 1e-4
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)


def test_a_narrower_student_learns_relations_without_projections_and_hidden_loss_needs_equal_widths(tmp_path):
    torch.manual_seed(0)
    teacher = BertModel(bert_config(layers=4))
    narrow = create_random_student(teacher, num_layers=2, hidden_size=16, num_attention_heads=2)
    trainer = GeneralDistillationTrainer(model=narrow, teacher_model=teacher, args=general_args(tmp_path))
    assert trainer.relations.pairs == ((2, 4),) and trainer.relations.heads == 2
    assert trainer.compute_loss(narrow, padded_batch()).item() > 0
    with pytest.raises(ValueError, match="needs equal widths"):
        GeneralDistillationTrainer(
            model=narrow, teacher_model=teacher, args=general_args(tmp_path, hidden_weight=1.0)
        )


def test_corpus_windows_pack_lines_of_a_document_into_max_length_windows(tmp_path):
    tokenizer = tiny_tokenizer()
    (tmp_path / "a.txt").write_text("w1 w2 w3\n\nw4 w5 w6 w7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("w8 w9\n")
    windows = list(corpus_windows([str(tmp_path)], tokenizer, max_length=5, min_tokens=2))
    texts = [tokenizer.decode(w["input_ids"]) for w in windows]
    # 3 text tokens per window between [CLS] and [SEP]; each file is its own document; tails >= 2 tokens kept.
    assert texts == ["[CLS] w1 w2 w3 [SEP]", "[CLS] w4 w5 w6 [SEP]", "[CLS] w8 w9 [SEP]"]
    assert all(w["attention_mask"] == [1] * len(w["input_ids"]) for w in windows)
    assert (
        len(list(corpus_windows([str(tmp_path)], tokenizer, max_length=5, min_tokens=2, max_windows=2))) == 2
    )
    with pytest.raises(FileNotFoundError, match="neither a .txt file"):
        corpus_dataset([str(tmp_path / "missing.txt")], tokenizer)


def test_the_corpus_streams_a_file_larger_than_the_memory_budget(tmp_path):
    """The first windows of a 40 MB file come out while less than 2 MB is allocated: read lazily."""
    tokenizer = tiny_tokenizer()
    line = " ".join(f"w{i % 100}" for i in range(200)) + "\n"
    path = tmp_path / "big.txt"
    with open(path, "w") as handle:
        for _ in range((40 << 20) // len(line) + 1):
            handle.write(line)
    assert path.stat().st_size > 40 << 20
    budget = 2 << 20
    dataset = corpus_dataset([str(path)], tokenizer, max_length=32, shuffle_buffer=8)
    tracemalloc.start()
    try:
        rows = [row for _, row in zip(range(20), dataset, strict=False)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(rows) == 20 and all(len(r["input_ids"]) == 32 for r in rows)
    assert peak < budget, f"reading 20 windows allocated {peak} bytes"


def test_distill_general_cli_writes_a_student_that_distill_starts_from_and_a_rerun_returns_it(
    tmp_path, capsys
):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3, layers=4)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i * 7 + j) % 110}" for j in range(30)) for i in range(40)))
    out = tmp_path / "general"
    argv = ["distill-general", "--teacher", str(teacher), "--corpus", str(corpus), "--student_layers", "2",
            "--max_length", "16", "--max_windows", "24", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
            "--output_dir", str(out), "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
            "--save_steps", "3", "--learning_rate", "1e-3"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "general_results.json").read_text())
    assert results["steps"] == 6 and results["relation_pairs"] == [[2, 4]] and results["relation_heads"] == 4
    assert results["student_shape"]["teacher_layers"] == [1, 3]
    assert (out / "checkpoint-6").is_dir()
    assert "general student saved" in capsys.readouterr().out
    student = AutoModelForSequenceClassification.from_pretrained(out, num_labels=3)
    assert student.config.num_hidden_layers == 2
    reloaded = BertModel.from_pretrained(out)
    original = BertModel.from_pretrained(teacher)
    # Trained: the copied layers moved away from the teacher's.
    assert not torch.equal(reloaded.encoder.layer[0].attention.self.query.weight,
                           original.encoder.layer[1].attention.self.query.weight)  # fmt: skip

    assert main(argv) == 0  # finished: returns the results without training again
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    distill = ["distill", "--teacher", str(teacher), "--student", str(out), "--dataset", str(data),
               "--output_dir", str(tmp_path / "task"), "--max_steps", "2", "--per_device_train_batch_size", "8",
               "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true"]  # fmt: skip
    assert main(distill) == 0
    task = json.loads((tmp_path / "task" / "distill_results.json").read_text())
    assert task["cross_tokenizer"] is False and 0 <= task["student_test_accuracy"] <= 1
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "task").config.num_hidden_layers == 2


def test_distill_general_needs_a_length_for_a_streamed_corpus(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher", layers=2)
    (tmp_path / "c.txt").write_text("w1 w2 w3\n")
    argv = ["distill-general", "--teacher", str(teacher), "--corpus", str(tmp_path / "c.txt"),
            "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]  # fmt: skip
    assert main(argv) == 1
    assert "set --max_steps, or --max_windows" in capsys.readouterr().err


def test_an_mpnet_teacher_teaches_its_layer_copies_through_the_relation_hooks(tmp_path):
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=40)  # fmt: skip
    teacher = MPNetModel(config).eval()
    student = create_student(teacher, 2)
    inputs = padded_batch()
    with torch.no_grad():  # layer copies of the teacher's relative-position bias and layers 2 and 4
        assert torch.equal(
            student.encoder.relative_attention_bias.weight, teacher.encoder.relative_attention_bias.weight
        )
    trainer = GeneralDistillationTrainer(model=student, teacher_model=teacher, args=general_args(tmp_path))
    assert trainer.relations.pairs == ((2, 4),)
    student.train()
    loss = trainer.compute_loss(student, inputs)
    loss.backward()
    assert loss.item() > 0 and student.encoder.layer[1].attention.attn.q.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_distill_general_runs_under_accelerate_launch_on_two_processes(tmp_path):
    import os
    import subprocess

    from test_ddp import accelerate_launch

    teacher = save_tiny_model(tmp_path / "teacher", layers=4)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(f"w{(i * 7 + j) % 110}" for j in range(30)) for i in range(40)))
    argv = ["distill-general", "--teacher", str(teacher), "--corpus", str(corpus), "--student_layers", "2",
            "--max_length", "16", "--max_steps", "3", "--per_device_train_batch_size", "4",
            "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--use_cpu", "true",
            "--disable_tqdm", "true", "--save_steps", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(accelerate_launch("-m", "distilnlp", *argv), env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "general_results.json").read_text())
    assert results["steps"] == 3 and results["windows_seen"] == 24  # 4 per process x 2 processes x 3 steps
    assert (tmp_path / "out" / "checkpoint-2").is_dir()
    BertModel.from_pretrained(tmp_path / "out")
