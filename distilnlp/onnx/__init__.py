"""ONNX half of distilnlp (needs `pip install 'distilnlp[onnx]'`): Optimum export (`export`), parity checks
(`parity`), optimization and int8 quantization configs (`quantize`)."""

from .export import ExportArguments, ExportResult, export_model
from .parity import ParityError, ParityReport, check_parity
from .quantize import default_preset
from .tasks import ort_model_class

__all__ = [
    "ExportArguments",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "check_parity",
    "default_preset",
    "export_model",
    "ort_model_class",
]
