"""Task data: where it comes from (`sources`), and how it is split, encoded and tokenized (`task`)."""

from .soft_labels import SoftLabelError, SoftLabels, read_soft_labels
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
from .teacher_inputs import TeacherInputsCollator

__all__ = [
    "BBC_NEWS",
    "SPLITS",
    "UNLABELED",
    "SoftLabelError",
    "SoftLabels",
    "TeacherInputsCollator",
    "DataArguments",
    "hide_labels",
    "label_names",
    "labeled_subset",
    "load_bbc_news",
    "load_task_data",
    "read_soft_labels",
    "tokenize_task_data",
]
