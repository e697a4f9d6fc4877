"""Run a sequence-classification teacher over a tokenized dataset: PyTorch eager or ONNX Runtime.

Backends:

- `torch`: the PyTorch model under `torch.inference_mode` (the reference).
- `onnx`: the teacher exported with `torch.onnx` (`distilnlp.onnx.export_teacher`, passed in as `onnx_export`),
  fp32, run by ONNX Runtime; its logits match PyTorch's to ~1e-6.
- `onnx-int8`: that graph, dynamically int8-quantized with `onnxruntime.quantization`. int8 logits are off by up
  to about one logit, which can flip the predicted class of an example the teacher is unsure about, so every
  example whose int8 top-1 margin (largest minus second-largest logit) is below `int8_guard_margin` is run
  again through the fp32 graph. An example can only change class under int8 if its int8 margin is at most
  twice the int8 error, so with the default guard (2.0) the cached top-1 equals fp32's whenever the int8
  error stays under 1 logit (the benchmark checks it on BBC News). Soft targets of the other examples keep
  the int8 error.

Examples are batched by length (longest first) and right-padded, so little compute goes to padding.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..runs.artifacts import TEACHER_CACHE_BACKENDS
from .fingerprint import MODEL_INPUT_COLUMNS

logger = logging.getLogger(__name__)

BACKENDS = TEACHER_CACHE_BACKENDS


@dataclass
class TeacherRun:
    """Logits of one dataset: (N, C) float32 in dataset order, and how they were made."""

    logits: np.ndarray
    backend: str
    seconds: float
    fp32_reruns: int = 0  # onnx-int8 only: examples re-run in fp32 because their int8 margin was small


def _batches(dataset: Dataset, batch_size: int, pad_id: int, chunk_batches: int = 64):
    """(row indices, right-padded int64 numpy inputs) in longest-first batches.

    Rows are read `chunk_batches * batch_size` at a time (memory-mapped Arrow), sorted by length within the
    chunk, so a dataset larger than memory streams from disk.
    """
    columns = [c for c in MODEL_INPUT_COLUMNS if c in dataset.column_names]
    view = dataset.select_columns(columns).with_format("numpy")
    chunk = chunk_batches * batch_size
    for offset in range(0, len(dataset), chunk):
        rows = view[offset : offset + chunk]  # ragged columns: object arrays
        lengths = np.array([len(ids) for ids in rows["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            batch = {}
            for column in columns:
                fill = pad_id if column == "input_ids" else 0
                out = np.full((len(index), width), fill, dtype=np.int64)
                for row, i in enumerate(index):
                    values = rows[column][i]
                    out[row, : len(values)] = values
                batch[column] = out
            if "attention_mask" not in batch:
                batch["attention_mask"] = (np.arange(width)[None, :] < lengths[index][:, None]).astype(
                    np.int64
                )
            yield offset + index, batch


def _run(dataset: Dataset, batch_size: int, pad_id: int, forward) -> np.ndarray:
    logits = None
    batches = _batches(dataset, batch_size, pad_id)
    total = -(-len(dataset) // batch_size)
    for index, batch in tqdm(batches, total=total, desc="teacher logits", unit="batch", disable=None):
        out = np.asarray(forward(batch), dtype=np.float32)
        if logits is None:
            logits = np.empty((len(dataset), out.shape[-1]), dtype=np.float32)
        logits[index] = out
    return logits


def _torch_forward(model: PreTrainedModel):
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    device = next(model.parameters()).device

    def forward(batch):
        inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k in accepted}
        with torch.inference_mode():
            return model(**inputs).logits.float().cpu().numpy()

    return forward


def _ort_forward(classifier):
    return classifier.logits


# The ONNX backends export the teacher with `distilnlp.onnx`, which sits above this package (its exporter imports the
# training modules): the caller passes that export in, `distilnlp.onnx.export_teacher`. Called as
# `onnx_export(teacher_dir, out_dir, quantize)`, it returns the fp32 runner and, with `quantize`, the dynamic int8 one
# (else None): objects with `.config` and `.logits(batch of int64 numpy inputs) -> (B, C)`.
OnnxExport = Callable[[Path, Path, bool], tuple[Any, Any]]


def compute_teacher_logits(
    teacher: PreTrainedModel | str | os.PathLike,
    datasets: dict[str, Dataset],
    *,
    backend: str = "torch",
    batch_size: int = 64,
    int8_guard_margin: float = 2.0,
    onnx_export: OnnxExport | None = None,
) -> dict[str, TeacherRun]:
    """Teacher logits for every dataset in `datasets` (tokenized, with `input_ids`).

    `teacher` is a sequence-classification model or its folder; the ONNX backends export it first with
    `onnx_export` (`distilnlp.onnx.export_teacher`; a loaded model is saved to a temporary folder for that).
    Export and quantization time is included in `seconds` of the first dataset.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend != "torch" and onnx_export is None:
        raise ValueError(
            f"backend={backend!r} runs the teacher with ONNX Runtime: pass its export, "
            "onnx_export=distilnlp.onnx.export_teacher (DistillationTrainer and `distilnlp cache-teacher` do)."
        )
    start = time.perf_counter()
    if backend == "torch":
        if not isinstance(teacher, PreTrainedModel):
            from transformers import AutoModelForSequenceClassification

            from ..runs.model_files import load_model_folder

            teacher = load_model_folder(AutoModelForSequenceClassification, teacher, "teacher")
        was_training = teacher.training
        teacher.eval()
        pad_id = teacher.config.pad_token_id or 0
        forward, int8_forward = _torch_forward(teacher), None
    with tempfile.TemporaryDirectory() as scratch:
        if backend != "torch":
            if isinstance(teacher, PreTrainedModel):
                teacher_dir = Path(scratch) / "teacher"
                teacher.save_pretrained(teacher_dir)
            else:
                teacher_dir = Path(teacher)
            fp32, int8 = onnx_export(teacher_dir, Path(scratch) / "onnx", backend == "onnx-int8")
            pad_id = fp32.config.pad_token_id or 0
            forward = _ort_forward(fp32)
            int8_forward = _ort_forward(int8) if int8 is not None else None
        runs = {}
        for name, dataset in datasets.items():
            reruns = 0
            if int8_forward is None:
                logits = _run(dataset, batch_size, pad_id, forward)
            else:
                logits = _run(dataset, batch_size, pad_id, int8_forward)
                top2 = np.sort(logits, axis=-1)[:, -2:] if logits.shape[-1] > 1 else None
                unsure = (
                    np.flatnonzero(top2[:, 1] - top2[:, 0] < int8_guard_margin) if top2 is not None else []
                )
                if len(unsure):
                    logits[unsure] = _run(dataset.select(unsure), batch_size, pad_id, forward)
                reruns = len(unsure)
            runs[name] = TeacherRun(logits, backend, time.perf_counter() - start, reruns)
            start = time.perf_counter()
    if backend == "torch" and was_training:
        teacher.train()
    for name, run in runs.items():
        extra = f", {run.fp32_reruns} low-margin examples re-run in fp32" if backend == "onnx-int8" else ""
        logger.info(
            f"Teacher logits of {name!r} ({len(run.logits)} examples) via {backend}: {run.seconds:.1f}s{extra}"
        )
    return runs
