"""Task data: where it comes from (`sources`), how it is split and encoded (`task`) and tokenized (`tokenize`)."""

from .bbc_tasks import BBC_NEWS_SENTENCES, BBC_NEWS_WINDOWS, BBC_TASKS, load_bbc_news, load_bbc_task
from .soft_labels import SoftLabelError, SoftLabels, read_soft_labels
from .sources import BBC_NEWS, SPLITS
from .task import (
    UNLABELED,
    DataArguments,
    hide_labels,
    label_names,
    labeled_subset,
    load_task_data,
)
from .teacher_inputs import TeacherInputsCollator
from .token_task import (
    SEQUENCE_TASK,
    TOKEN_TASK,
    detect_task,
    load_token_data,
    token_label_names,
    tokenize_token_data,
)
from .tokenize import tokenize_task_data
from .transfer import add_transfer_rows, load_transfer_texts, tokenize_transfer, window_texts

__all__ = [
    "BBC_NEWS",
    "BBC_NEWS_SENTENCES",
    "BBC_NEWS_WINDOWS",
    "BBC_TASKS",
    "SPLITS",
    "UNLABELED",
    "SEQUENCE_TASK",
    "SoftLabelError",
    "TOKEN_TASK",
    "SoftLabels",
    "TeacherInputsCollator",
    "add_transfer_rows",
    "DataArguments",
    "detect_task",
    "load_token_data",
    "token_label_names",
    "tokenize_token_data",
    "hide_labels",
    "label_names",
    "labeled_subset",
    "load_bbc_news",
    "load_bbc_task",
    "load_task_data",
    "read_soft_labels",
    "load_transfer_texts",
    "tokenize_task_data",
    "tokenize_transfer",
    "window_texts",
]
