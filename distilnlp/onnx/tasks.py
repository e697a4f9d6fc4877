"""Which task an exported model does, and the PyTorch / Optimum classes that load it."""

from __future__ import annotations

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, PretrainedConfig


def _task(config: PretrainedConfig) -> str:
    """'sequence-classification' or 'token-classification', from the config's architecture."""
    architectures = config.architectures or []
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch.endswith("ForTokenClassification"):
            return "token-classification"
    raise ValueError(
        f"Cannot export architectures {architectures}: supported are *ForSequenceClassification and "
        "*ForTokenClassification models."
    )


def ort_model_class(config: PretrainedConfig):
    """The Optimum `ORTModelFor*` class for a model config."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTModelForTokenClassification

    return {
        "sequence-classification": ORTModelForSequenceClassification,
        "token-classification": ORTModelForTokenClassification,
    }[_task(config)]


def _torch_model_class(config: PretrainedConfig):
    return {
        "sequence-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,
    }[_task(config)]


# ------------------------------------------------------------------------------------------------- export
