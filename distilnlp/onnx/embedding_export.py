"""`distilnlp export` of a sentence-transformers folder: fp32 + int8 ONNX sentence embedders, gated.

    export_embedder(EmbeddingExportArguments("emb-l2", "emb-l2-onnx"), texts)

Writes `model.onnx` (fp32: encoder, pooling, Dense, normalization; output `sentence_embedding`), checked against
the `SentenceTransformer` (max |difference| <= `max_abs_diff`); `model_quantized.onnx`, the first int8 graph of the
chain (ORT-fused graph per-channel, fused per-tensor, unfused per-channel: `fusion.py`, `quantize.py`) whose
embeddings keep a mean cosine >= `min_cosine` to the fp32 graph's on `texts` (none passes: `ParityError` naming
the best); the tokenizer; `distilnlp_export.json` (pooling, max_seq_length, the gate's figures, every attempt).
Built in a staging folder and moved in only when whole and checked (`atomic.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..int8.presets import default_preset
from ..runs.artifacts import (
    CORE_PACKAGES,
    EXPORT_STAGING_PREFIX,
    EXPORT_SUMMARY_FILE,
    ONNX_FILE,
    ONNX_PACKAGES,
    QUANTIZED_FILE,
    package_versions,
)
from ..runs.sentence_folder import describe_pooling, load_sentence_model
from .atomic import check_target, move_in, remove_stale_staging
from .embedder import OnnxEmbedder, cosine_rows, export_embedding_graph
from .fusion import fuse_graph
from .parity import ParityError
from .quantize import QuantizationSettings, quantize_graph

# Used when the caller gives no texts: varied lengths, so padding and truncation are both exercised.
FALLBACK_TEXTS = (
    "Shares fell sharply in early trading after the company warned on profits.",
    "The match ended in a draw.",
    "Ministers will publish the plans next week, officials said, after months of talks with unions and "
    "employers about pay, pensions and the retirement age.",
    "New phones",
    "The film won three awards at the ceremony in London on Sunday night.",
    "Broadband use has doubled in two years.",
)


@dataclass
class EmbeddingExportArguments:
    """`distilnlp export` of a sentence-transformers folder (parse with `HfArgumentParser`)."""

    model_dir: str = field(
        metadata={"help": "A sentence-transformers folder (e.g. `distill-embeddings`' output)."}
    )
    output_dir: str = field(
        metadata={"help": "Folder to write the ONNX embedder to.", "aliases": ["--output"]}
    )
    quantize: bool = field(
        default=True, metadata={"help": "Also write the gated int8 graph model_quantized.onnx."}
    )
    min_cosine: float = field(
        default=0.99, metadata={"help": "Least mean cosine of the int8 embeddings to the fp32 graph's."}
    )
    max_abs_diff: float = field(
        default=1e-4, metadata={"help": "Largest |fp32 ONNX - PyTorch| embedding value."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Token limit (default: the model's)."})
    gate_texts: int = field(
        default=128,
        metadata={"help": "How many bundled BBC evaluation texts the checks embed (0: a few built in)."},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Export into a non-empty folder that is no export."}
    )


def _embed(model, texts: Sequence[str]) -> np.ndarray:
    return model.encode(list(texts), batch_size=32, convert_to_numpy=True)


def _int8_attempts(fp32: Path, config, work: Path) -> list[tuple[str, Path, QuantizationSettings]]:
    """(name, source graph, settings) in the order they are tried."""
    fused = fuse_graph(fp32, config, work / "fused.onnx")
    preset = default_preset()
    attempts = []
    if fused is not None and fused.complete:
        # Per-channel first: per-tensor int8 of a sentence embedder loses ~0.04 cosine (0.96 on a 2-layer
        # MiniLM student, 0.996 per-channel), while classifiers' argmax barely moves.
        attempts.append(
            ("fused-per-channel", fused.path, QuantizationSettings.for_preset(preset, False, True))
        )
        attempts.append(("fused", fused.path, QuantizationSettings.for_preset(preset, False, False)))
    attempts.append(("unfused-per-channel", fp32, QuantizationSettings.for_preset(preset, False, True)))
    return attempts


def _choose_int8(settings: EmbeddingExportArguments, config, staging: Path, texts, reference) -> dict:
    """Quantize along the chain until the gate passes; the chosen graph is staging/QUANTIZED_FILE."""
    tried = []
    with tempfile.TemporaryDirectory() as work:
        for name, source, quant in _int8_attempts(staging / ONNX_FILE, config, Path(work)):
            target = Path(work) / f"int8-{name}.onnx"
            quantize_graph(source, target, quant)
            cosine = cosine_rows(embed_graph(target, staging, settings.max_length, texts), reference)
            tried.append(
                {
                    "name": name,
                    "settings": asdict(quant),
                    "mean_cosine": float(cosine.mean()),
                    "min_cosine": float(cosine.min()),
                }
            )
            if cosine.mean() >= settings.min_cosine:
                shutil.copy(target, staging / QUANTIZED_FILE)
                return {"chosen": name, "attempts": tried, "threshold_min_cosine": settings.min_cosine}
    best = max(tried, key=lambda t: t["mean_cosine"])
    raise ParityError(
        f"no int8 graph keeps a mean cosine >= {settings.min_cosine} to the fp32 embeddings (best: {best['name']}, "
        f"{best['mean_cosine']:.4f} on {len(texts)} texts); ship the fp32 graph (--quantize false) or lower "
        "--min_cosine."
    )


def embed_graph(path: Path, folder: Path, max_length: int | None, texts: Sequence[str]) -> np.ndarray:
    """(N, D) embeddings of `texts` by the graph `path`, with the tokenizer saved in `folder`."""
    return OnnxEmbedder(folder, str(path), num_threads=1, max_length=max_length).encode(texts, batch_size=16)


def write_embedding_export(settings: EmbeddingExportArguments, texts: Sequence[str], staging: Path) -> dict:
    """Everything of the export into `staging` (which must not exist); returns the summary."""
    model = load_sentence_model(settings.model_dir, role="model")
    if settings.max_length:
        model.max_seq_length = settings.max_length
    settings = replace(settings, max_length=model.max_seq_length)  # the caller's arguments stay as given
    texts = list(texts) or list(FALLBACK_TEXTS)
    staging.mkdir(parents=True)
    _, names = export_embedding_graph(model, model.tokenizer, staging / ONNX_FILE)
    model.tokenizer.save_pretrained(staging)
    model[0].auto_model.config.save_pretrained(staging)
    summary = {
        "task": "sentence-embedding",
        "model_dir": str(settings.model_dir),
        "inputs": names,
        "max_seq_length": model.max_seq_length,
        **describe_pooling(model),
        "settings": asdict(settings),
    }
    (staging / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary))
    reference = _embed(model, texts)
    fp32 = embed_graph(staging / ONNX_FILE, staging, settings.max_length, texts)
    diff = float(np.abs(fp32 - reference).max())
    summary["parity"] = {
        "fp32": {"max_abs_diff": diff, "threshold": settings.max_abs_diff, "texts": len(texts)}
    }
    if diff > settings.max_abs_diff:
        raise ParityError(
            f"the fp32 ONNX embeddings differ from PyTorch's by {diff:.2e} (> {settings.max_abs_diff:g}) on "
            f"{len(texts)} texts; check the model loads with eager attention."
        )
    if settings.quantize:
        summary["int8"] = _choose_int8(settings, model[0].auto_model.config, staging, texts, fp32)
    summary["versions"] = package_versions(*CORE_PACKAGES, *ONNX_PACKAGES, "sentence-transformers")
    summary["written_files"] = sorted({p.name for p in staging.iterdir()} | {EXPORT_SUMMARY_FILE})
    (staging / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export_embedder(settings: EmbeddingExportArguments, texts: Sequence[str] = ()) -> dict:
    """Export the sentence-transformers folder `settings.model_dir` into `settings.output_dir` (built aside,
    moved in when checked). Returns the summary written to its distilnlp_export.json."""
    model_dir, target = Path(settings.model_dir), Path(settings.output_dir)
    check_target(target, model_dir, settings.overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f"{EXPORT_STAGING_PREFIX}{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = write_embedding_export(settings, texts, staging)
        move_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
