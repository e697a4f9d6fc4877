"""ONNX half of distilnlp (needs `pip install 'distilnlp[onnx]'`): Optimum export (`export`), parity checks
(`parity`), optimization and int8 quantization configs (`quantize`); `atomic` checks the inputs and puts an
export in place only once it is whole and checked."""

from .atomic import export_model  # the writer in `export`, built aside and swapped into place
from .export import ExportArguments, ExportResult
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
