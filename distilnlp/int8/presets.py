"""int8 presets named after the CPU (as optimum-onnx named them): which one fits this machine, and the weight grid
of each. One source for the exporter (`onnx.quantize`) and for quantization-aware training
(`quantization_aware`), which must round exactly as the exported graph computes.

Why the grids differ: ONNX Runtime's uint8 x int8 kernels for AVX2 and AVX-512 without VNNI (VPMADDUBSW) saturate
each sum of two adjacent products to int16, and a uint8 input (up to 255) times full-range int8 weights reaches
2 * 255 * 127 = 64770 > 32767. "avx512_vnni" (VPDPBUSD, and AMX) and "arm64" compute uint8 x int8 exactly; "avx2"
uses uint8 weights (uint8 x uint8 kernels widen to int16 first: exact on every x86 CPU); "avx512" uses 7-bit weights
(`reduce_range`), so 2 * 255 * 64 = 32640 fits int16.
"""

from __future__ import annotations

import platform
from pathlib import Path

# preset -> weight grid: "int8" max|w| / 127 in [-127, 127]; "int7" max|w| / 64 in [-64, 64]; "uint8" around zero
# point 128, max|w| / 127.5 in [-128, 127].
WEIGHT_GRIDS = {"avx512_vnni": "int8", "avx512": "int7", "avx2": "uint8", "arm64": "int8"}
PRESETS = tuple(WEIGHT_GRIDS)


def default_preset() -> str:
    """The preset that fits the CPU this runs on."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def weight_type(preset: str) -> str:
    """The `onnxruntime.quantization.QuantType` name of the preset's weights."""
    return "QUInt8" if WEIGHT_GRIDS[preset] == "uint8" else "QInt8"


def reduce_range(preset: str) -> bool:
    """Whether the preset's weights are 7-bit (ORT's `reduce_range`)."""
    return WEIGHT_GRIDS[preset] == "int7"
