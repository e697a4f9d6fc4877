"""Which task an exported model does, and the PyTorch / Optimum classes that load it."""

from __future__ import annotations

from importlib.util import find_spec

from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, PretrainedConfig

ONNX_EXTRA_MODULES = ("onnx", "onnxruntime", "optimum.onnxruntime")


class MissingOnnxExtraError(ImportError):
    """ONNX export, quantization or an ONNX benchmark stage was asked for without `distilnlp[onnx]`."""


def require_onnx(what: str = "ONNX export and quantization") -> None:
    """Fail in one line, naming the extra, when Optimum's ONNX half or ONNX Runtime is not installed."""
    missing = [name for name in ONNX_EXTRA_MODULES if _missing(name)]
    if missing:
        raise MissingOnnxExtraError(
            f"{what} needs the onnx extra ({', '.join(missing)} not installed): pip install 'distilnlp[onnx]' "
            "(optimum-onnx 0.1 needs transformers < 4.58)."
        )


def _missing(module: str) -> bool:
    try:
        return find_spec(module) is None
    except ModuleNotFoundError:  # the parent package (optimum) is absent
        return True


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
    require_onnx()
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
