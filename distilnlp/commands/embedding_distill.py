"""`distilnlp distill-embeddings`: a small sentence embedder from a sentence-embedding teacher, on unlabelled text.

    distilnlp distill-embeddings --teacher minilm --student_layers 2 --output_dir emb-l2

Steps: load the teacher (a sentence-transformers folder, or an encoder with --pooling), build the student
(layer copies, or --student_model with a projection), cut the distillation text into windows, embed it with the
teacher once (cached when --teacher_cache is set), train with `EmbeddingDistillationTrainer`, save the student
as a sentence-transformers folder (`SentenceTransformer(output_dir)` loads it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset

from ..data.embedding_texts import BBC_TRANSFER_ARTICLES, distillation_texts
from ..distill.embedding_trainer import (
    TEACHER_EMBEDDING_COLUMN,
    EmbeddingDistillationArguments,
    EmbeddingDistillationTrainer,
)
from ..distill.sentence_student import create_sentence_student
from ..distill.stage_arguments import list_items
from ..runs.sentence_folder import describe_pooling, load_sentence_model
from ..teacher_cache.embeddings import cached_teacher_embeddings
from .arguments import PACKAGED_TEACHER, resolve_model_path

logger = logging.getLogger(__name__)

RUN_FILE = "distilnlp_embedding.json"


def parse_word_counts(value) -> list[int]:
    """Window sizes from a typed list, or comma- / space-separated text ("16,64,256")."""
    try:
        counts = [int(part) for part in list_items(value)]
    except (TypeError, ValueError):
        raise ValueError(f"window_words must be word counts, e.g. 16,64,256; got {value!r}.") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"window_words must be word counts >= 1, e.g. 16,64,256; got {value!r}.")
    return counts


@dataclass
class EmbeddingDistillArguments:
    """The teacher, the student and the unlabelled text of `distill-embeddings`."""

    teacher: str = field(
        default=PACKAGED_TEACHER,
        metadata={
            "help": "Sentence-transformers folder or encoder folder; 'minilm' = the packaged all-MiniLM-L6-v2."
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "mean / cls / max for a plain encoder teacher (a sentence-transformers folder keeps its own)."
        },
    )
    normalize: bool | None = field(
        default=None, metadata={"help": "L2-normalise a plain encoder teacher's embeddings."}
    )
    student_layers: int | None = field(
        default=2, metadata={"help": "Student depth: copies of the teacher's layers."}
    )
    layers: str = field(
        default="uniform", metadata={"help": "Which teacher layers to copy: uniform / first / last."}
    )
    student_model: str | None = field(
        default=None,
        metadata={"help": "A student encoder folder instead of layer copies (projection if narrower)."},
    )
    transfer_dataset: str = field(
        default=BBC_TRANSFER_ARTICLES,
        metadata={
            "help": "Unlabelled text: 'bbc_news' (the bundled corpus' transfer articles, none of which the "
            "embedding evaluation reads) or a .txt / .csv / .jsonl / .parquet file or folder."
        },
    )
    window_words: list[int] = field(
        default_factory=lambda: [16, 64, 256],
        metadata={"help": "Window sizes (words) cut from each document, comma-separated or space-separated."},
    )
    max_texts: int | None = field(
        default=None, metadata={"help": "Keep at most this many texts (after windowing)."}
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Token limit (default: the teacher's)."}
    )
    teacher_cache: str | None = field(
        default=None, metadata={"help": "Folder for the teacher-embedding cache."}
    )
    cache_fp16: bool = field(default=False, metadata={"help": "Store cached teacher embeddings as fp16."})

    def __post_init__(self):
        self.window_words = parse_word_counts(self.window_words)
        if self.student_model is not None:
            self.student_layers = None


def _rows(student, texts: list[str], embeddings) -> Dataset:
    tokenizer = student.tokenizer
    encoded = tokenizer(texts, truncation=True, max_length=student.max_seq_length)
    rows = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
    rows[TEACHER_EMBEDDING_COLUMN] = embeddings.tolist()
    return Dataset.from_dict(rows)


def distill_embeddings(
    args: EmbeddingDistillArguments, training_args: EmbeddingDistillationArguments
) -> dict:
    """Distill, save the student to `training_args.output_dir`, return the run's record (also in RUN_FILE)."""
    teacher_path = resolve_model_path(args.teacher)
    teacher = load_sentence_model(teacher_path, args.pooling, args.normalize, args.max_seq_length).eval()
    student = create_sentence_student(teacher, args.student_layers, args.layers, args.student_model)
    texts = distillation_texts(args.transfer_dataset, args.window_words, args.max_texts, training_args.seed)
    logger.info("Distilling on %d texts from %s.", len(texts), args.transfer_dataset)
    embeddings = cached_teacher_embeddings(teacher, texts, args.teacher_cache, args.cache_fp16)
    trainer = EmbeddingDistillationTrainer(
        student,
        training_args,
        train_dataset=_rows(student, texts, embeddings),
        processing_class=student.tokenizer,
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(training_args))
    trainer.save_model(training_args.output_dir)
    record = {
        "teacher": teacher_path,
        "teacher_pooling": describe_pooling(teacher),
        "student_layers": args.student_layers,
        "student_model": args.student_model,
        "texts": len(texts),
        "arguments": asdict(args),
        "losses": {
            k: getattr(training_args, k) for k in ("mse_weight", "cosine_weight", "similarity_weight")
        },
        "train_loss": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }
    Path(training_args.output_dir, RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def _last_checkpoint(training_args) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(training_args.output_dir)
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
