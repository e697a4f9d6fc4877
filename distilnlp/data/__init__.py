"""Task data: where it comes from (`sources`), and how it is split, encoded and tokenized (`task`)."""

from .sources import BBC_NEWS, SPLITS, load_bbc_news
from .task import (
    UNLABELED,
    DataArguments,
    hide_labels,
    label_names,
    labeled_subset,
    load_task_data,
    tokenize_task_data,
)

__all__ = [
    "BBC_NEWS",
    "SPLITS",
    "UNLABELED",
    "DataArguments",
    "hide_labels",
    "label_names",
    "labeled_subset",
    "load_bbc_news",
    "load_task_data",
    "tokenize_task_data",
]
