"""Which task an exported model does, and the PyTorch class that loads it."""

from __future__ import annotations

import os

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, PretrainedConfig

from ..runs.model_files import model_task


def _task(config: PretrainedConfig) -> str:
    """'sequence-classification' or 'token-classification', from the config's architecture."""
    architectures = config.architectures or []
    task = model_task(architectures)
    if task is not None:
        return task
    raise ValueError(
        f"Cannot export architectures {architectures}: supported are *ForSequenceClassification and "
        "*ForTokenClassification models."
    )


def _torch_model_class(config: PretrainedConfig):
    return {
        "sequence-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,
    }[_task(config)]


def load_for_export(model_dir: str | os.PathLike, config: PretrainedConfig):
    """The PyTorch model in `model_dir`, in evaluation mode, with eager attention: the attention subgraph that the
    TorchScript exporter writes for it is the one ONNX Runtime fuses (SDPA's is not)."""
    from ..runs.model_files import load_model_folder

    return load_model_folder(
        _torch_model_class(config), model_dir, "model", attn_implementation="eager"
    ).eval()
