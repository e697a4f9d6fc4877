"""ONNX half of distilnlp: export with `torch.onnx` (`torch_export`), ONNX Runtime's transformer fusions
(`fusion`), int8 quantization with `onnxruntime.quantization` (`quantize`) and the fallback chain that picks an
int8 graph which keeps accuracy (`fallback`), parity checks (`parity`), and a runtime class (`runtime`); `atomic`
checks the inputs and puts an export in place only once it is whole and checked."""

from .arguments import ExportArguments, ExportTexts
from .atomic import export_model  # the writer in `export`, built aside and moved into place
from .embedder import OnnxEmbedder
from .export import ExportResult
from .parity import ParityError, ParityReport, check_parity
from .quantize import default_preset
from .runtime import OnnxClassifier
from .torch_export import export_teacher  # the teacher cache's ONNX backends (`onnx_export`)

__all__ = [
    "ExportArguments",
    "ExportResult",
    "ExportTexts",
    "OnnxClassifier",
    "OnnxEmbedder",
    "ParityError",
    "ParityReport",
    "check_parity",
    "default_preset",
    "export_model",
    "export_teacher",
]
