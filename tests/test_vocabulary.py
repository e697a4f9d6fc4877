"""Vocabulary trimming on a tiny WordPiece BERT: ids, logits and int8 predictions preserved exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import export, save_wordpiece_model
from transformers import AutoTokenizer, BertForSequenceClassification

from distilnlp.onnx.vocabulary import trim_vocabulary

SUBWORDS = ["un", "re", "##believ", "##able", "##do", "##ing", "##s"]
TEXTS = [
    "w1 w2 unbelievable w3",
    "redoing w4 w5 w6 w7",
    "w8 w9 undo w10 w11 w12 w13 w14 w15 w16",
    "w17 Zq w18",  # "Zq" is [UNK] in the original vocab too
] + [" ".join(f"w{(7 * i + 3 * j) % 300}" for j in range(4 + i % 9)) for i in range(40)]


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """`save_wordpiece_model` with a few WordPiece continuation pieces appended to the vocab (and the model)."""
    path = save_wordpiece_model(tmp_path / "model", layers=1)
    ids = AutoTokenizer.from_pretrained(path).get_vocab()  # transformers 5 saves tokenizer.json, no vocab.txt
    vocab = sorted(ids, key=ids.get)
    (path / "vocab.txt").write_text("\n".join(vocab + SUBWORDS) + "\n")
    (path / "tokenizer.json").unlink()
    from transformers import BertTokenizerFast

    BertTokenizerFast(vocab=str(path / "vocab.txt"), model_max_length=128).save_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path)
    model.resize_token_embeddings(len(vocab) + len(SUBWORDS))
    torch.manual_seed(1)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.2)
    model.save_pretrained(path)
    return path


def logits(path, texts):
    model = BertForSequenceClassification.from_pretrained(path).eval()
    enc = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_trimming_preserves_ids_and_logits_exactly(model_dir, tmp_path):
    before = AutoTokenizer.from_pretrained(model_dir)
    assert before.tokenize("unbelievable redoing") == ["un", "##believ", "##able", "re", "##do", "##ing"]
    report = trim_vocabulary(model_dir, tmp_path / "trimmed", TEXTS, keep_quantization_ranges=False)
    after = AutoTokenizer.from_pretrained(tmp_path / "trimmed")

    new_id = {old: new for new, old in enumerate(report.kept_ids)}
    for text in TEXTS:
        assert after(text)["input_ids"] == [new_id[i] for i in before(text)["input_ids"]]
    assert after.tokenize("unbelievable redoing") == ["un", "##believ", "##able", "re", "##do", "##ing"]
    torch.testing.assert_close(logits(tmp_path / "trimmed", TEXTS), logits(model_dir, TEXTS), rtol=0, atol=0)

    # Kept: the tokens of the texts and the five specials, nothing else (##s and most w-words are gone).
    used = {i for t in TEXTS for i in before(t)["input_ids"]} | set(before.all_special_ids)
    assert report.kept_ids == sorted(used) and report.range_rows == 0
    assert report.vocab_size_before == 1000 + len(SUBWORDS) and report.vocab_size_after == len(used) < 330
    assert after.vocab_size == len(used) and len(
        (tmp_path / "trimmed" / "vocab.txt").read_text().split()
    ) == len(used)
    config = json.loads((tmp_path / "trimmed" / "config.json").read_text())
    assert config["vocab_size"] == len(used) and config["pad_token_id"] == 0
    assert report.weights_bytes_after < report.weights_bytes_before
    assert report.parameters_before - report.parameters_after == (report.vocab_size_before - len(used)) * 32

    # Outside the task: a word whose pieces are all kept splits as before; one with a dropped piece does not.
    assert after.tokenize("undoing unbelievable w1") == before.tokenize("undoing unbelievable w1")
    assert before.tokenize("w500") == ["w500"] and after.tokenize("w500") == [
        "[UNK]"
    ]  # w5 kept, ##00 never was
    recorded = json.loads((tmp_path / "trimmed" / "distilnlp_vocabulary.json").read_text())
    assert recorded["kept_ids"] == report.kept_ids


@pytest.mark.slow  # two exports
def test_int8_export_of_the_trimmed_model_predicts_identically(model_dir, tmp_path):
    import onnxruntime as ort

    # keep_quantization_ranges (the default) keeps the rows that set the int8 scales of the embedding matrix.
    plain = export(model_dir, tmp_path / "plain", parity_texts=TEXTS, min_agreement=0.9)
    trimmed = export(
        model_dir,
        tmp_path / "trimmed",
        parity_texts=TEXTS,
        min_agreement=0.9,
        trim_vocabulary=True,
        vocabulary_texts=TEXTS,
    )
    vocab = json.loads(trimmed.summary_path.read_text())["vocabulary"]
    assert vocab["range_rows"] > 0 and vocab["vocab_size_after"] < 400 < vocab["vocab_size_before"]
    assert trimmed.quantized_path.stat().st_size < plain.quantized_path.stat().st_size * 0.9
    assert (trimmed.output_dir / "distilnlp_vocabulary.json").is_file()

    outputs = []
    for result in (plain, trimmed):
        session = ort.InferenceSession(str(result.quantized_path), providers=["CPUExecutionProvider"])
        enc = AutoTokenizer.from_pretrained(result.output_dir)(TEXTS, padding=True, return_tensors="np")
        outputs.append(
            session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
        )
    np.testing.assert_array_equal(outputs[1], outputs[0])  # bit-identical int8 logits


def test_trimming_needs_texts(model_dir, tmp_path):
    with pytest.raises(ValueError, match="needs the task's texts"):
        trim_vocabulary(model_dir, tmp_path / "t", [])
    with pytest.raises(ValueError, match="--trim_vocabulary needs the task's texts"):
        export(model_dir, tmp_path / "o", trim_vocabulary=True)
