"""Sentence-embedding distillation (issue 21): pooling, losses, the trainer, the saved folder, the ONNX embedder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import EXPORT_WORDS, wordpiece_tokenizer
from transformers import BertConfig, BertModel

from distilnlp.distill.losses import embedding_cosine_loss, embedding_mse_loss, similarity_kl_loss

# --------------------------------------------------------------------------------------------- tiny models


def save_encoder(path, hidden=32, layers=2, seed=0, init=0.2):
    """A random BertModel (no head) + WordPiece tokenizer over EXPORT_WORDS, saved to `path`."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(EXPORT_WORDS, model_max_length=64)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        initializer_range=init,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(path)
    return path


def save_sentence_teacher(path, pooling="mean", normalize=True, layers=2):
    """A sentence-transformers folder around a tiny random encoder."""
    from distilnlp.runs.sentence_folder import load_sentence_model

    encoder = save_encoder(path.parent / f"{path.name}-encoder", layers=layers)
    load_sentence_model(encoder, pooling, normalize).save(str(path))
    return path


def texts(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, 300, rng.integers(2, 20))) for _ in range(n)]


# ----------------------------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_of_a_plain_encoder_equals_hand_pooling(tmp_path, pooling):
    from distilnlp.runs.sentence_folder import load_sentence_model

    folder = save_encoder(tmp_path / "enc")
    model = load_sentence_model(folder, pooling=pooling, normalize=False)
    batch = ["w1 w2 w3 w4 w5", "w7"]
    got = model.encode(batch, convert_to_tensor=True)
    encoder = BertModel.from_pretrained(folder).eval()
    encoded = wordpiece_tokenizer(EXPORT_WORDS)(batch, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    expected = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sentence_folder_keeps_its_pooling_and_rejects_a_conflicting_flag(tmp_path):
    from distilnlp.runs.sentence_folder import describe_pooling, load_sentence_model

    folder = save_sentence_teacher(tmp_path / "st", pooling="cls", normalize=True)
    model = load_sentence_model(folder)
    assert describe_pooling(model) | {"max_seq_length": 0} == {
        "pooling": "cls",
        "normalize": True,
        "dense": False,
        "dimension": 32,
        "max_seq_length": 0,
    }
    assert np.allclose(np.linalg.norm(model.encode(["w1 w2"]), axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="conflicts with .*'cls'"):
        load_sentence_model(folder, pooling="mean")


# ------------------------------------------------------------------------------------------------ losses


def test_embedding_mse_and_cosine_match_hand_values():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # row 0: ((1-0)^2 + (0-1)^2) / 2 = 1; row 1: (0 + 1) / 2 = 0.5
    assert embedding_mse_loss(s, t, "sum").item() == pytest.approx(1.5)
    assert embedding_mse_loss(s, t).item() == pytest.approx(0.75)
    # row 0: orthogonal, 1 - 0 = 1; row 1: same direction, 0
    assert embedding_cosine_loss(s, t, "sum").item() == pytest.approx(1.0)


def test_similarity_kl_equals_hand_computation():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    temperature = 0.5
    r = 1 / math.sqrt(2)
    cos_s = [[None, 0.0, r], [0.0, None, r], [r, r, None]]
    cos_t = [[None, 0.6, 0.0], [0.6, None, 0.8], [0.0, 0.8, None]]
    total = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        zs = sum(math.exp(cos_s[i][j] / temperature) for j in others)
        zt = sum(math.exp(cos_t[i][j] / temperature) for j in others)
        for j in others:
            p_s = math.exp(cos_s[i][j] / temperature) / zs
            p_t = math.exp(cos_t[i][j] / temperature) / zt
            total += p_t * math.log(p_t / p_s)
    assert similarity_kl_loss(s, t, temperature, "sum").item() == pytest.approx(total, rel=1e-6)
    assert similarity_kl_loss(s, t, temperature).item() == pytest.approx(total / 3, rel=1e-6)
    assert similarity_kl_loss(t, t, temperature).item() == pytest.approx(0.0, abs=1e-7)
    assert similarity_kl_loss(s[:1], t[:1]).item() == 0.0  # nothing else in the batch to rank
    with pytest.raises(ValueError, match="temperature"):
        similarity_kl_loss(s, t, 0.0)


# ------------------------------------------------------------------------------------ students and trainer


def _rows(student, teacher, sample):
    from distilnlp.commands.embedding_distill import _rows as rows

    return rows(student, sample, teacher.encode(sample, convert_to_numpy=True))


def _trainer(tmp_path, student, teacher, sample, **fields):
    from distilnlp.distill.embedding_trainer import (
        EmbeddingDistillationArguments,
        EmbeddingDistillationTrainer,
    )

    args = EmbeddingDistillationArguments(
        output_dir=str(tmp_path), report_to=[], save_strategy="no", logging_steps=1, seed=0, **fields
    )
    return EmbeddingDistillationTrainer(
        student, args, train_dataset=_rows(student, teacher, sample), processing_class=student.tokenizer
    )


def test_accumulation_gives_the_gradients_of_one_batch(tmp_path):
    from distilnlp.distill.sentence_student import create_sentence_student
    from distilnlp.runs.sentence_folder import load_sentence_model

    teacher = load_sentence_model(save_sentence_teacher(tmp_path / "t", layers=3)).eval()
    sample = texts(16, seed=1)
    finals = {}
    for name, batch, steps in (("one", 8, 1), ("accumulated", 2, 4)):
        torch.manual_seed(0)
        student = create_sentence_student(teacher, 1)
        trainer = _trainer(
            tmp_path / name,
            student,
            teacher,
            sample,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=steps,
            max_steps=2,
            learning_rate=0.5,
            optim="sgd",
            lr_scheduler_type="constant",
            cosine_weight=1.0,
            dataloader_drop_last=False,
        )
        trainer.train()
        finals[name] = {k: v.detach().clone() for k, v in student.state_dict().items()}
    changed = False
    for key, value in finals["one"].items():
        torch.testing.assert_close(value, finals["accumulated"][key], rtol=1e-4, atol=1e-6, msg=key)
    start = create_sentence_student(teacher, 1).state_dict()
    changed = any(not torch.equal(start[k], v) for k, v in finals["one"].items())
    assert changed, "training changed no weight"


def test_distilled_student_saves_as_a_sentence_transformers_folder(tmp_path):
    from sentence_transformers import SentenceTransformer

    from distilnlp.commands.embedding_distill import EmbeddingDistillArguments, distill_embeddings
    from distilnlp.distill.embedding_trainer import EmbeddingDistillationArguments
    from distilnlp.runs.sentence_folder import load_sentence_model

    teacher_dir = save_sentence_teacher(tmp_path / "teacher", layers=3)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts(40, seed=2)) + "\n")
    args = EmbeddingDistillArguments(
        teacher=str(teacher_dir),
        student_layers=1,
        transfer_dataset=str(corpus),
        window_words="4,16",
        teacher_cache=str(tmp_path / "cache"),
    )
    training = EmbeddingDistillationArguments(
        output_dir=str(tmp_path / "student"),
        report_to=[],
        save_strategy="no",
        max_steps=6,
        logging_steps=1,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        similarity_weight=1.0,
        cosine_weight=1.0,
    )
    record = distill_embeddings(args, training)
    assert record["train_loss"][-1] < record["train_loss"][0]
    loaded = SentenceTransformer(str(tmp_path / "student"), device="cpu")
    ours = load_sentence_model(tmp_path / "student", role="student")
    sample = texts(6, seed=9)
    # SentenceTransformer loads SDPA attention, distilnlp eager (for ONNX): the same maths, float rounding apart.
    np.testing.assert_allclose(loaded.encode(sample), ours.encode(sample), atol=1e-6)
    assert loaded[0].auto_model.config.num_hidden_layers == 1
    assert len(list((tmp_path / "cache").glob("teacher-embeddings-*.safetensors"))) == 1


def test_a_narrower_student_model_gets_a_projection_to_the_teachers_width(tmp_path):
    from sentence_transformers import SentenceTransformer

    from distilnlp.distill.sentence_student import create_sentence_student
    from distilnlp.runs.sentence_folder import describe_pooling, load_sentence_model

    teacher = load_sentence_model(save_sentence_teacher(tmp_path / "t")).eval()
    student = create_sentence_student(teacher, student_path=str(save_encoder(tmp_path / "s", hidden=16)))
    facts = describe_pooling(student)
    assert facts["dense"] and facts["dimension"] == 32 and facts["normalize"]
    _trainer(tmp_path / "run", student, teacher, texts(8), max_steps=1, per_device_train_batch_size=4).train()
    student.save(str(tmp_path / "saved"))
    sample = texts(3, seed=4)
    np.testing.assert_allclose(
        SentenceTransformer(str(tmp_path / "saved"), device="cpu").encode(sample),
        student.encode(sample),
        atol=1e-6,
    )


def test_teacher_embeddings_are_cached_by_fingerprint(tmp_path, monkeypatch):
    from distilnlp.runs.sentence_folder import load_sentence_model
    from distilnlp.teacher_cache import embeddings as cache

    teacher = load_sentence_model(save_sentence_teacher(tmp_path / "t")).eval()
    sample = texts(10)
    first = cache.cached_teacher_embeddings(teacher, sample, tmp_path / "c", fp16=True)
    monkeypatch.setattr(cache, "encode_teacher", lambda *a, **k: pytest.fail("the cache was not read"))
    np.testing.assert_array_equal(
        cache.cached_teacher_embeddings(teacher, sample, tmp_path / "c", fp16=True), first
    )
    np.testing.assert_allclose(first, teacher.encode(sample), atol=1e-3)  # fp16 storage
    assert cache.embedding_fingerprint(teacher, sample) != cache.embedding_fingerprint(teacher, sample[1:])


# -------------------------------------------------------------------------------------------------- ONNX


@pytest.mark.onnx
def test_onnx_embedder_matches_pytorch_and_the_int8_gate_passes(tmp_path):
    from distilnlp.onnx import OnnxEmbedder
    from distilnlp.onnx.embedding_export import EmbeddingExportArguments, export_embedder
    from distilnlp.runs.sentence_folder import load_sentence_model

    folder = save_sentence_teacher(tmp_path / "st", layers=2)
    summary = export_embedder(
        EmbeddingExportArguments(str(folder), str(tmp_path / "onnx")), texts(32, seed=5)
    )
    sample = texts(12, seed=6)
    reference = load_sentence_model(folder).encode(sample)
    fp32 = OnnxEmbedder(tmp_path / "onnx", "model.onnx").encode(sample, batch_size=5)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    assert summary["int8"]["chosen"] and (tmp_path / "onnx" / "model_quantized.onnx").is_file()
    int8 = OnnxEmbedder.from_pretrained(tmp_path / "onnx").encode(sample)
    assert OnnxEmbedder.from_pretrained(tmp_path / "onnx").path.name == "model_quantized.onnx"
    assert (int8 * fp32).sum(1).mean() >= 0.99  # unit vectors: the dot product is the cosine
    assert OnnxEmbedder(tmp_path / "onnx").encode("w1 w2").shape == (32,)


@pytest.mark.onnx
def test_int8_gate_fails_a_graph_built_to_drift(tmp_path):
    from distilnlp.onnx import ParityError
    from distilnlp.onnx.embedding_export import EmbeddingExportArguments, export_embedder
    from distilnlp.runs.sentence_folder import load_sentence_model

    folder = save_sentence_teacher(tmp_path / "st", layers=2)
    model = load_sentence_model(folder)
    with torch.no_grad():
        # One huge input feature per layer: its weights set every int8 scale, the others round to ~0.
        for layer in model[0].auto_model.encoder.layer:
            layer.intermediate.dense.weight[:, 0] *= 1e4
            layer.output.dense.weight[:, 0] *= 1e4
    model.save(str(tmp_path / "drift"))
    with pytest.raises(ParityError, match="no int8 graph keeps a mean cosine"):
        export_embedder(EmbeddingExportArguments(str(tmp_path / "drift"), str(tmp_path / "onnx")), texts(32))
    assert not (tmp_path / "onnx").exists()  # nothing moved in


# ------------------------------------------------------------------------------------------- evaluation


def test_retrieval_and_classification_scores_match_hand_values():
    from distilnlp.benchmark.embedding_eval import classification_accuracy, retrieval_scores

    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    documents = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    # query 0: doc 1 (cos 1) > doc 0 -> rank 2; query 1: doc 2 best, doc 1 next... own doc 1 is last -> rank 3;
    # query 2: doc 0 cos 0.77, doc 1 0.71, doc 2 0.71 -> own doc 2 ties doc 1, counted rank 2.
    scores = retrieval_scores(queries, documents)
    assert scores["mrr_at_10"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert scores["recall_at_1"] == 0.0
    x = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    assert classification_accuracy(x, np.array([0, 0, 1, 1]), x[[1, 2]], np.array([0, 1])) == 1.0


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.mark.onnx
def test_cli_distills_exports_and_loads_an_embedder(tmp_path, capsys):
    from distilnlp.commands.cli import main
    from distilnlp.onnx import OnnxEmbedder
    from distilnlp.runs.sentence_folder import load_sentence_model

    teacher = save_sentence_teacher(tmp_path / "teacher", layers=2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts(30, seed=3)) + "\n")
    student = tmp_path / "student"
    argv = [
        "distill-embeddings",
        "--teacher",
        str(teacher),
        "--student_layers",
        "1",
        "--transfer_dataset",
        str(corpus),
        "--window_words",
        "6",
        "--output_dir",
        str(student),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--report_to",
        "none",
        "--cosine_weight",
        "1",
    ]
    assert main(argv) == 0
    assert "saved to" in capsys.readouterr().out
    assert main(["export", str(student), "--output", str(tmp_path / "onnx"), "--gate_texts", "0"]) == 0
    assert "int8 graph" in capsys.readouterr().out
    sample = texts(5, seed=8)
    np.testing.assert_allclose(
        OnnxEmbedder(tmp_path / "onnx", "model.onnx").encode(sample),
        load_sentence_model(student).encode(sample),
        atol=1e-4,
    )


def test_cli_errors_are_one_line(tmp_path, capsys):
    from distilnlp.commands.cli import main

    teacher = save_sentence_teacher(tmp_path / "teacher")
    assert (
        main(["distill-embeddings", "--teacher", str(tmp_path / "missing"), "--output_dir", str(tmp_path)])
        == 1
    )
    assert "does not exist" in capsys.readouterr().err
    argv = ["distill-embeddings", "--teacher", str(teacher), "--window_words", "8,x"]
    assert main(argv) == 2
    assert "window_words must be" in capsys.readouterr().err
    argv = [
        "distill-embeddings",
        "--teacher",
        str(teacher),
        "--mse_weight",
        "0",
        "--output_dir",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "Every loss weight is 0" in capsys.readouterr().err
