"""Tiny random BERT teachers/students and token datasets, built in-test (no downloads)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

VOCAB = 120


def bert_config(hidden=32, layers=4, heads=4, num_labels=3, dropout=0.0, **kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **kwargs,
    )


def tiny_pair(
    seed=0, student_hidden=16, student_layers=2, student_heads=2, token=False, num_labels=3, **kwargs
):
    """(teacher, student): a 4-layer width-32 teacher and a smaller student, eager attention."""
    cls = BertForTokenClassification if token else BertForSequenceClassification
    torch.manual_seed(seed)
    teacher = cls._from_config(bert_config(num_labels=num_labels, **kwargs), attn_implementation="eager")
    student_cfg = bert_config(student_hidden, student_layers, student_heads, num_labels=num_labels, **kwargs)
    student = cls._from_config(student_cfg, attn_implementation="eager")
    return teacher, student


def token_dataset(n=64, seed=0, min_len=4, max_len=24, num_labels=3, token=False, teacher=None) -> Dataset:
    """Random token sequences of varying length. Labels come from `teacher` when given (a learnable
    task), else at random; token-level labels are -100 on special positions."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (), generator=g))
        ids = [1] + torch.randint(5, VOCAB, (length - 2,), generator=g).tolist() + [2]
        rows.append({"input_ids": ids, "attention_mask": [1] * length})
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            for row in rows:
                logits = teacher(input_ids=torch.tensor([row["input_ids"]])).logits[0]
                row["labels"] = logits.argmax(-1).tolist() if token else int(logits.argmax())
    else:
        for row in rows:
            if token:
                labels = torch.randint(0, num_labels, (len(row["input_ids"]),), generator=g).tolist()
                row["labels"] = [-100] + labels[1:-1] + [-100]
            else:
                row["labels"] = int(torch.randint(0, num_labels, (), generator=g))
    return Dataset.from_list(rows)


def pad_collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest row (pad id 0, label -100 for token labels)."""
    length = max(len(r["input_ids"]) for r in rows)
    batch = {
        "input_ids": torch.tensor([r["input_ids"] + [0] * (length - len(r["input_ids"])) for r in rows]),
        "attention_mask": torch.tensor(
            [r["attention_mask"] + [0] * (length - len(r["attention_mask"])) for r in rows]
        ),
    }
    if "labels" in rows[0]:
        first = rows[0]["labels"]
        if isinstance(first, list) and len(first) == len(rows[0]["input_ids"]):
            batch["labels"] = torch.tensor([r["labels"] + [-100] * (length - len(r["labels"])) for r in rows])
        else:
            batch["labels"] = torch.tensor([r["labels"] for r in rows])
    return batch


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_tokenizer(words, model_max_length: int = 512):
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is the special tokens then `words`.

    Built from a `tokenizers.Tokenizer`: transformers 5 ignores `BertTokenizerFast(vocab_file=...)`.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def tiny_tokenizer(folder=None):
    """A WordPiece tokenizer over a VOCAB-sized word list `w0 w1 ...` (saved to `folder` when given)."""
    tokenizer = wordpiece_tokenizer([f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))])
    if folder is not None:
        tokenizer.save_pretrained(folder)
    return tokenizer


def save_tiny_model(folder, num_labels=3, seed=0, layers=4, **config):
    """A random tiny BERT classifier + tokenizer saved like a fine-tuned model folder."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config(layers=layers, num_labels=num_labels, **config))
    model.save_pretrained(folder)
    tiny_tokenizer(folder).save_pretrained(folder)
    return folder


def write_topic_csv(path, n=60, labels=("alpha", "beta", "gamma")):
    """A small text-classification CSV whose label is spelled out by a keyword in the text."""
    import csv
    import random

    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = labels[i % len(labels)]
            keyword = f"w{labels.index(label)}"
            filler = " ".join(f"w{rng.randrange(10, VOCAB - 5)}" for _ in range(rng.randrange(3, 15)))
            writer.writerow([f"{keyword} {filler}", label])
    return path


def quick_distillation_args(tmp_path, **overrides):
    """DistillationTrainingArguments for a few quiet CPU steps in `tmp_path / "run"`; overrides win."""
    from distilnlp import DistillationTrainingArguments

    values = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        temperature=2.0,
    )
    return DistillationTrainingArguments(**(values | overrides))


EXPORT_WORDS = [f"w{i}" for i in range(995)]


def save_wordpiece_model(path, *, layers: int = 2, token: bool = False, seed: int = 0):
    """A random width-32 BERT classifier (3 labels) + a WordPiece tokenizer over `EXPORT_WORDS`, saved to `path`.

    Initialised wider than the default 0.02 so logits are O(1) and a 1e-4 ONNX parity tolerance is a real test.
    """
    from pathlib import Path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(EXPORT_WORDS, model_max_length=128)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=3,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    cls = BertForTokenClassification if token else BertForSequenceClassification
    cls(config).eval().save_pretrained(path)
    return path


def assert_accumulation_matches_one_batch(make_trainer, tmp_path, loss_key="loss", **fields) -> list[float]:
    """Train a fresh `tiny_pair(seed=5)` for 3 SGD steps on varying-length rows, once as one batch of 8 and once
    as 4 accumulated micro-batches of 2 (`make_trainer(folder, teacher, student, dataset, **fields)`), and assert
    equal logged `loss_key` values (rel 1e-4) and final student weights. Returns the one-batch run's losses."""
    dataset = token_dataset(48, seed=3, min_len=3, max_len=30)
    final = {}
    for name, batch_size, accumulation in (("one_batch", 8, 1), ("accumulated", 2, 4)):
        teacher, student = tiny_pair(seed=5)
        trainer = make_trainer(
            tmp_path / name,
            teacher,
            student,
            dataset,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=3,
            learning_rate=1e-2,
            optim="sgd",
            lr_scheduler_type="constant",
            **fields,
        )
        trainer.train()
        losses = [e[loss_key] for e in trainer.state.log_history if "loss" in e]
        final[name] = ({k: v.detach().clone() for k, v in student.state_dict().items()}, losses)
    (params_a, losses_a), (params_b, losses_b) = final["one_batch"], final["accumulated"]
    assert losses_a == pytest.approx(losses_b, rel=1e-4)
    for key in params_a:
        torch.testing.assert_close(params_a[key], params_b[key], rtol=1e-4, atol=1e-6, msg=key)
    return losses_a


def export(model_dir, output_dir, *, overwrite=False, **fields):
    """`distilnlp.onnx.export_model` with `ExportArguments` and `ExportTexts` fields given as keywords."""
    from dataclasses import fields as dataclass_fields

    from distilnlp.onnx import ExportArguments, ExportTexts, export_model

    text_fields = {f.name for f in dataclass_fields(ExportTexts)}
    texts = ExportTexts(**{k: v for k, v in fields.items() if k in text_fields})
    options = {k: v for k, v in fields.items() if k not in text_fields}
    return export_model(
        ExportArguments(str(model_dir), str(output_dir), **options), texts, overwrite=overwrite
    )
