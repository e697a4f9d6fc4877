"""The fp32 ONNX graph of a PyTorch classifier, written by `torch.onnx.export`.

    names = graph_input_names(model, tokenizer)          # e.g. ['input_ids', 'attention_mask', 'token_type_ids']
    export_graph(model, "out/model.onnx", names)

The TorchScript exporter (`dynamo=False`) on an eager-attention model is used because its graph is the one ONNX
Runtime's BERT fusions recognise (fused `Attention`, `EmbedLayerNormalization`); the dynamo exporter's graph matches
PyTorch as closely but ORT fuses no attention in it (onnxruntime #19423). Batch and sequence axes are dynamic.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..int8.presets import default_preset
from ..runs.artifacts import ONNX_FILE, QUANTIZED_FILE
from .quantize import QuantizationSettings, quantize_graph
from .runtime import OnnxClassifier
from .tasks import load_for_export

OPSET = 17
_CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def graph_input_names(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None) -> list[str]:
    """The inputs the graph takes: what the tokenizer produces (or input ids, mask and token types without one)
    that the model's `forward` accepts, in `forward`'s order."""
    accepted = list(inspect.signature(model.forward).parameters)
    produced = list(tokenizer.model_input_names) if tokenizer is not None else list(_CANDIDATE_INPUTS)
    if "token_type_ids" in produced and not getattr(model.config, "type_vocab_size", 0):
        produced.remove("token_type_ids")  # DistilBERT-like models have no token type embeddings
    names = [name for name in accepted if name in produced]
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__} takes no input_ids; only text encoders can be exported.")
    return names


def _example_inputs(model: PreTrainedModel, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Batch 2, length 8, the second row padded: sizes of 1 would be specialised into the graph."""
    generator = torch.Generator().manual_seed(0)
    low = 5 if model.config.vocab_size > 10 else 0
    ids = torch.randint(low, model.config.vocab_size, (2, 8), generator=generator)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(2, 8, dtype=torch.long)}
    return {name: values[name] for name in names}


def export_graph(model: PreTrainedModel, path: str | os.PathLike, input_names: Sequence[str]) -> Path:
    """Export `model` (a `*ForSequenceClassification` / `*ForTokenClassification`, eager attention) to `path`:
    inputs `input_names` (int64, (batch, sequence)), output `logits` ((batch, labels) or (batch, sequence,
    labels))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    token_level = type(model).__name__.endswith("ForTokenClassification")
    axes["logits"] = {0: "batch", 1: "sequence"} if token_level else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about Python control flow in the mask helpers; the parity check is the real test.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs=_example_inputs(model, input_names),
            input_names=list(input_names),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def export_teacher(
    teacher_dir: Path, out_dir: Path, quantize: bool
) -> tuple[OnnxClassifier, OnnxClassifier | None]:
    """fp32 (and, with `quantize`, dynamic int8) `OnnxClassifier`s of the teacher in `teacher_dir`, written under
    `out_dir`: the `onnx` / `onnx-int8` backends of the teacher cache (`distilnlp.teacher_cache`, which sits below
    this package and gets this function passed in as `onnx_export`)."""
    config = AutoConfig.from_pretrained(teacher_dir)
    model = load_for_export(teacher_dir, config)
    export_graph(model, out_dir / ONNX_FILE, graph_input_names(model, None))
    config.save_pretrained(out_dir)
    fp32 = OnnxClassifier(out_dir / ONNX_FILE, None, config)
    if not quantize:
        return fp32, None
    settings = QuantizationSettings.for_preset(default_preset(), is_static=False, per_channel=False)
    int8 = OnnxClassifier(
        quantize_graph(out_dir / ONNX_FILE, out_dir / QUANTIZED_FILE, settings), None, config
    )
    return fp32, int8
