"""Sentence embedders on ONNX Runtime: the graph (encoder + pooling + normalization, output `sentence_embedding`)
and `OnnxEmbedder`, which tokenizes and runs it.

    embedder = OnnxEmbedder.from_pretrained("emb-onnx")      # model_quantized.onnx when present
    vectors = embedder.encode(["A sentence.", "Another."], batch_size=32)   # (2, D) float32

The graph is exported from the `SentenceTransformer` itself (`SentenceEmbeddingGraph` calls its modules), so
its pooling, any Dense projection and the normalization are sentence-transformers' own operations, traced.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..runs.artifacts import EXPORT_SUMMARY_FILE, ONNX_FILE, QUANTIZED_FILE
from ..runs.model_files import saved_tokenizer
from .runtime import session_options
from .torch_export import OPSET, _example_inputs, graph_input_names

EMBEDDING_OUTPUT = "sentence_embedding"


class SentenceEmbeddingGraph(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> (batch, D) sentence embeddings of a `SentenceTransformer`."""

    def __init__(self, model, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        return self.model(features)[EMBEDDING_OUTPUT]


def export_embedding_graph(model, tokenizer, path: str | os.PathLike) -> tuple[Path, list[str]]:
    """Write the fp32 ONNX graph of `model` (a `SentenceTransformer`, eager attention) to `path`; dynamic batch
    and sequence axes. Returns (path, input names)."""
    encoder = model[0].auto_model
    names = graph_input_names(encoder, tokenizer)
    graph = SentenceEmbeddingGraph(model.eval(), names).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[EMBEDDING_OUTPUT] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing warnings about mask helpers; the parity check is the test
        torch.onnx.export(
            graph,
            (),
            str(path),
            kwargs=_example_inputs(encoder, names),
            input_names=names,
            output_names=[EMBEDDING_OUTPUT],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path, names


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` (N, D) with the same row of `b` (N, D): (N,)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


class OnnxEmbedder:
    """A sentence embedder exported by `distilnlp export` (a sentence-transformers folder), on ONNX Runtime's CPU
    provider. `OnnxEmbedder(folder)` equals `OnnxEmbedder.from_pretrained(folder)`."""

    def __init__(
        self,
        folder: str | os.PathLike,
        file_name: str | None = None,
        num_threads: int | None = None,
        max_length: int | None = None,
    ):
        import onnxruntime as ort

        folder = Path(folder)
        file_name = file_name or (QUANTIZED_FILE if (folder / QUANTIZED_FILE).is_file() else ONNX_FILE)
        self.path = (
            folder / file_name
        )  # an absolute file_name: a graph elsewhere, with this folder's tokenizer
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} does not exist; export a sentence-transformers folder there with: "
                f"distilnlp export MODEL_DIR --output {folder}"
            )
        self.tokenizer = saved_tokenizer(folder)
        summary = _summary(folder)
        self.max_length = max_length or summary.get("max_seq_length") or self.tokenizer.model_max_length
        self.session = ort.InferenceSession(
            str(self.path), session_options(num_threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, file_name: str | None = None, num_threads: int | None = None
    ) -> OnnxEmbedder:
        """Load `folder / file_name` (default: the int8 graph when present, else fp32) and its tokenizer."""
        return cls(folder, file_name, num_threads)

    def embed_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """(batch, D) embeddings of an encoded batch ((batch, length) int arrays)."""
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run([EMBEDDING_OUTPUT], feed)[0]

    def encode(self, texts: str | Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 embeddings of `texts` (one text: (D,)), batches of `batch_size` sorted by length so
        little padding is computed, returned in the input order."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            for i, vector in zip(rows, self.embed_batch(encoded), strict=True):
                out[i] = vector
        result = np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
        return result[0] if single else result


def _summary(folder: Path) -> dict:
    try:
        return json.loads((folder / EXPORT_SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
