"""The sentence-embedding commands: `distill-embeddings`, `export` of a sentence-transformers folder, and
`evaluate-embeddings`.

    distilnlp distill-embeddings --teacher minilm --student_layers 2 --output_dir emb-l2
    distilnlp export emb-l2 --output emb-l2-onnx
    distilnlp evaluate-embeddings emb-l2-onnx --teacher minilm
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runs.artifacts import EXPORT_SUMMARY_FILE
from ..runs.sentence_folder import is_sentence_folder
from .arguments import resolve_model_path


@dataclass
class EvaluateEmbeddingsArguments:
    """`distilnlp evaluate-embeddings MODEL`: the BBC News embedding tasks (`benchmark.embedding_eval`)."""

    model: str = field(metadata={"help": "A sentence-transformers folder or an ONNX embedder export folder."})
    teacher: str | None = field(
        default=None,
        metadata={"help": "Also score this teacher ('minilm': the packaged one) and the cosine to it."},
    )
    onnx_file: str | None = field(
        default=None, metadata={"help": "Graph of an export folder (default: int8 if present)."}
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Token limit for every model (default: each one's)."}
    )
    max_sentences: str = field(
        default="4000,2000", metadata={"help": "Sentences to fit on, sentences to test on."}
    )
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads (default: all)."})
    output_json: str | None = field(default=None, metadata={"help": "Write the scores to this JSON file."})

    def __post_init__(self):
        sentence_counts(self.max_sentences)


def is_embedding_export(folder: str | os.PathLike) -> bool:
    try:
        summary = json.loads((Path(folder) / EXPORT_SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("task") == "sentence-embedding"


def encoder_for(
    path: str, max_seq_length: int | None = None, onnx_file: str | None = None, num_threads: int | None = None
) -> Callable[[list[str]], np.ndarray]:
    """list[str] -> (N, D) embeddings of an ONNX embedder export or a sentence-transformers / encoder folder."""
    if is_embedding_export(path):
        from ..onnx.embedder import OnnxEmbedder

        embedder = OnnxEmbedder(path, onnx_file, num_threads, max_length=max_seq_length)
        return lambda texts: embedder.encode(texts, batch_size=32)
    from ..runs.sentence_folder import load_sentence_model

    model = load_sentence_model(resolve_model_path(path), max_seq_length=max_seq_length, role="model").eval()
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    return lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True)


def sentence_counts(text: str) -> tuple[int, int]:
    try:
        fit, test = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"max_sentences must be two counts, FIT,TEST (e.g. 4000,2000); got {text!r}."
        ) from None
    if fit < 10 or test < 1:
        raise ValueError(f"max_sentences needs >= 10 sentences to fit on and >= 1 to test; got {text!r}.")
    return fit, test


def evaluate_embeddings(args: EvaluateEmbeddingsArguments) -> dict:
    """Scores of `args.model` (and of `args.teacher`, with the model's cosine to it); a markdown table."""
    from ..benchmark.embedding_eval import EvaluationData, embed_all, markdown_table, score_embeddings

    data = EvaluationData.load(sentence_counts(args.max_sentences))
    models = {"model": args.model, **({"teacher": args.teacher} if args.teacher else {})}
    embeddings = {
        name: embed_all(
            encoder_for(
                path, args.max_seq_length, args.onnx_file if name == "model" else None, args.num_threads
            ),
            data,
        )
        for name, path in models.items()
    }
    teacher = embeddings.get("teacher")
    rows = {models[name]: score_embeddings(e, data, teacher) for name, e in embeddings.items()}
    result = {"sizes": data.sizes(), "scores": rows, "markdown": markdown_table(rows, args.teacher)}
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def export_texts(count: int) -> list[str]:
    """`count` texts of the bundled BBC evaluation articles (sentences, headlines and bodies), or none."""
    if count <= 0:
        return []
    try:
        from ..benchmark.embedding_eval import EvaluationData
    except ImportError:
        return []
    try:
        data = EvaluationData.load((0, count))
    except ImportError:  # no bundled corpus: the export's built-in texts
        return []
    mixed = [*data.sentences_test[: count // 2], *data.headlines[: count // 4], *data.bodies[: count // 4]]
    return mixed[:count]


def looks_like_sentence_export(argv: list[str]) -> bool:
    """Whether `distilnlp export ARGS` names a sentence-transformers folder (first argument or --model_dir)."""
    candidates = [argv[0]] if argv and not argv[0].startswith("-") else []
    candidates += [argv[i + 1] for i, token in enumerate(argv[:-1]) if token == "--model_dir"]
    return any(is_sentence_folder(c) for c in candidates)
