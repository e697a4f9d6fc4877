"""`distilnlp distill-general`: task-agnostic distillation of a student encoder from a teacher's encoder on
unlabelled text (MiniLMv2 relations, optional hidden states); its output folder is a pretrained student that
`distilnlp distill --student <folder>` fine-tunes and distills on a task."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, set_seed

from ..data.corpus import BUNDLED_CORPORA, corpus_dataset
from ..distill.general import GeneralDistillationArguments, GeneralDistillationTrainer
from ..distill.stage_arguments import list_items
from ..runs.artifacts import GENERAL_RESULTS_FILE
from ..runs.checkpoints import RunSettingsCallback, plan_resume
from ..runs.lock import output_dir_lock
from ..runs.model_files import load_model_folder
from .arguments import resolve_model_path
from .steps import student_from_teacher, write_json

logger = logging.getLogger(__name__)


@dataclass
class GeneralArguments:
    """The teacher, the student's shape and the unlabelled corpus of `distill-general`."""

    teacher: str = field(
        default="minilm",
        metadata={
            "help": "Teacher folder (a fine-tuned classifier or a pretrained encoder: its encoder is used) or "
            "'minilm' (the packaged all-MiniLM-L6-v2)."
        },
    )
    corpus: list[str] = field(
        default_factory=lambda: ["news_articles"],
        metadata={
            "help": "Unlabelled text sources, comma- or space-separated: .txt files, folders of .txt files, or "
            f"bundled corpora ({', '.join(BUNDLED_CORPORA)}). Streamed: never loaded whole."
        },
    )
    student: str | None = field(
        default=None, metadata={"help": "Start from this pretrained student folder instead of building one."}
    )
    student_layers: int | None = field(
        default=None, metadata={"help": "Student depth (default: half the teacher's layers)."}
    )
    student_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "A narrower student (own random initialisation), e.g. 256; unset: copied teacher layers."
        },
    )
    student_num_attention_heads: int | None = field(
        default=None, metadata={"help": "With student_hidden_size."}
    )
    student_intermediate_size: int | None = field(
        default=None, metadata={"help": "With student_hidden_size."}
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per training window."})
    min_tokens: int = field(default=16, metadata={"help": "Drop a document's last window if shorter."})
    max_windows: int | None = field(
        default=None,
        metadata={
            "help": "Use the first N windows of the corpus (per epoch); sets max_steps when it is unset."
        },
    )
    shuffle_buffer: int = field(
        default=1000, metadata={"help": "Windows shuffled together (1: corpus order)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the teacher's custom model code."}
    )

    def __post_init__(self) -> None:
        self.corpus = list_items(self.corpus)
        if not self.sources:
            raise ValueError("corpus must name at least one source (a .txt file, a folder or news_articles).")
        for name in ("max_length", "min_tokens", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1 or unset, got {self.max_windows}.")

    @property
    def sources(self) -> list[str]:
        return list_items(self.corpus)


def build_general_student(general_args: GeneralArguments, teacher):
    """The student encoder: a pretrained folder, a narrower random one, or copied teacher layers."""
    if general_args.student:
        return load_model_folder(AutoModel, resolve_model_path(general_args.student), "student")
    return student_from_teacher(general_args, teacher)


def _training_length(general_args: GeneralArguments, args: GeneralDistillationArguments) -> None:
    """A streamed corpus has no length: the run's steps come from max_steps or max_windows."""
    if args.max_steps > 0:
        return
    if general_args.max_windows is None:
        raise ValueError(
            "A streamed corpus has no length: set --max_steps, or --max_windows (windows per epoch) with "
            "--num_train_epochs."
        )
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    args.max_steps = max(1, math.ceil(general_args.max_windows * args.num_train_epochs / per_step))


def distill_general(general_args: GeneralArguments, args: GeneralDistillationArguments) -> dict:
    """Distill a student encoder from the teacher's on the corpus; saves it (with the teacher's tokenizer)
    and `general_results.json` in `args.output_dir`. Reruns resume the newest complete checkpoint."""
    _training_length(general_args, args)
    settings = args.settings()
    settings["distillation"] |= {
        "teacher": general_args.teacher, "corpus": general_args.corpus, "max_length": general_args.max_length,
        "max_windows": general_args.max_windows, "student": general_args.student,
        "student_layers": general_args.student_layers, "student_hidden_size": general_args.student_hidden_size,
    }  # fmt: skip
    with output_dir_lock(args.output_dir):
        plan = plan_resume(args, settings, GENERAL_RESULTS_FILE)
        if plan.finished is not None:
            return plan.finished
        set_seed(args.seed)  # the student's own initialisation (a narrower one) follows --seed
        path = resolve_model_path(general_args.teacher)
        trust = general_args.trust_remote_code
        tokenizer = load_model_folder(AutoTokenizer, path, "teacher's tokenizer", trust_remote_code=trust)
        teacher = load_model_folder(AutoModel, path, "teacher", trust_remote_code=trust)
        student = build_general_student(general_args, teacher)
        windows = corpus_dataset(
            general_args.sources, tokenizer, general_args.max_length, general_args.min_tokens,
            general_args.max_windows, general_args.shuffle_buffer, args.seed,
        )  # fmt: skip
        trainer = GeneralDistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=windows,
            data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
            callbacks=[RunSettingsCallback(settings, plan.changes, plan.checkpoint)],
        )  # fmt: skip
        output = trainer.train(resume_from_checkpoint=plan.checkpoint)
        trainer.save_model()
        trainer.save_state()
        results = {
            **settings["distillation"],  # first: the measured values below win (relation_heads resolved)
            "train_loss": output.training_loss,
            "train_seconds": round(output.metrics.get("train_runtime", 0.0), 1),
            "steps": trainer.state.global_step,
            "windows_seen": trainer.state.global_step * args.per_device_train_batch_size
            * args.gradient_accumulation_steps * args.world_size,
            "relation_pairs": [list(pair) for pair in trainer.relations.pairs],
            "relation_heads": trainer.relations.heads,
            "student_shape": {
                "layers": student.config.num_hidden_layers, "hidden_size": student.config.hidden_size,
                "teacher_layers": getattr(student.config, "distilnlp_teacher_layers", None),
            },
        }  # fmt: skip
        if trainer.is_world_process_zero():
            write_json(Path(args.output_dir) / GENERAL_RESULTS_FILE, results)
        return results
