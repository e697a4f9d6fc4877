"""Quantization-aware distillation: the student trains with the int8 arithmetic ONNX Runtime's dynamic int8 graph
will run, so distillation can correct what quantization breaks.

    make_quantization_aware(student)   # in place; DistillationTrainer does it with quantization_aware=True

Every `nn.Linear` and `nn.Embedding` of the student is switched (class swap, same parameters and state-dict keys, so
`save_pretrained` writes an ordinary checkpoint) to a fake-quantized twin that rounds exactly as ORT's dynamic
quantizer (`onnxruntime.quantization`, IntegerOps, `ort_quantizer_settings(preset)`) and its kernels do:

- Linear weights: symmetric, one scale per output channel (Linear rows; the ONNX MatMul's output columns), on the
  weight grid of the ORT preset (`WEIGHT_GRIDS`; `config.distilnlp_quantization_aware` records the preset):
  "int8" max|w| / 127 in [-127, 127]; "int7" (int8 with `reduce_range`) max|w| / 64 in [-64, 64]; "uint8" around
  zero point 128, max|w| / 127.5 in [-128, 127];
- embedding tables (ORT quantizes a Gather's table as an activation, uint8, one scale per table): asymmetric uint8
  with the table's range widened to hold 0, zero point round(-min / scale); except with uint8 weights (weight type =
  activation type), where ORT gives the table the symmetric weight grid;
- Linear inputs: uint8 asymmetric per tensor with the range of the current batch, widened to hold 0
  (ORT's `DynamicQuantizeLinear`).

Rounding passes gradients straight through (straight-through estimator); scales are not trained. The products of
two activations inside attention stay fp32 in training, so the int8 export of a quantization-aware student keeps
those MatMuls in fp32 too (`qat_nodes_to_exclude`).

The integer products must then be exact in ORT, and they are unless a CPU without VNNI runs uint8 x int8: MLAS's
U8S8 kernels for AVX2 and AVX-512 without VNNI (VPMADDUBSW) saturate each sum of two adjacent products to int16,
and a uint8 input (up to 255) times full-range int8 weights reaches 2 * 255 * 127 = 64770 > 32767. The presets avoid
that case: "avx512_vnni" (VPDPBUSD, and AMX) and "arm64" compute uint8 x int8 exactly; "avx2" uses uint8 weights
(U8U8 kernels widen to int16 first: exact on every x86 CPU); "avx512" (AVX-512 without VNNI) uses 7-bit weights, so
2 * 255 * 64 = 32640 fits int16. With that, the int8 graph reproduces the fake-quantized PyTorch model up to float
summation order (~2e-7 on the test models; `benchmarks/qat_ort_parity.py` measures it), fused or not, except where
that float noise (~1e-6) puts an activation on the other side of a rounding boundary: that sequence then moves by one
quantization step (occasional, one row per flip). EmbedLayerNormalization fusion must stay off: QEmbedLayerNormalization
also rounds the LayerNorm's gamma and beta, which training does not (2e-2 on the test model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .presets import WEIGHT_GRIDS, default_preset, reduce_range, weight_type

# The config attribute that marks a student trained this way (its value: the ORT preset); `distilnlp export`
# reads it.
CONFIG_FLAG = "distilnlp_quantization_aware"

_GRID_STEPS = {"int8": (127.0, -127, 127), "int7": (64.0, -64, 64), "uint8": (127.5, -128, 127)}


def ort_quantizer_settings(preset: str) -> dict:
    """The ONNX Runtime dynamic quantizer settings that reproduce this module's rounding for `preset`: keyword
    arguments of `onnxruntime.quantization.quantize_dynamic` (QuantType names as strings); `ONNXQuantizer` takes the
    same values (per_channel, reduce_range, weight_qType, activation_qType=QUInt8, static=False,
    mode=QuantizationMode.IntegerOps, op_types_to_quantize=list(IntegerOpsRegistry), extra_options). Exclude
    `qat_nodes_to_exclude(fp32_graph)` too (with "MatMulConstBOnly" they are left alone anyway)."""
    return {
        "per_channel": True,
        "reduce_range": reduce_range(preset),
        "weight_type": weight_type(preset),
        "activation_type": "QUInt8",
        "extra_options": {
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "EnableSubgraph": False,
            "ForceSymmetric": False,
            "MatMulConstBOnly": True,
        },
    }


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)  # half to even, like ONNX QuantizeLinear and numpy

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant_weight(weight: torch.Tensor, per_channel: bool = True, grid: str = "int8") -> torch.Tensor:
    """Symmetric round trip of a (out, in) weight (per row) or of any tensor (per tensor) on an ORT weight grid:
    "int8" scale max|w| / 127 in [-127, 127]; "int7" (reduce_range) max|w| / 64 in [-64, 64]; "uint8" (zero point
    128) max|w| / 127.5 in [-128, 127]."""
    steps, low, high = _GRID_STEPS[grid]
    absmax = weight.detach().abs().amax(dim=1, keepdim=True) if per_channel else weight.detach().abs().max()
    scale = absmax.clamp_min(1e-12) / steps
    return _RoundSTE.apply(weight / scale).clamp(low, high) * scale


def fake_quant_table(table: torch.Tensor, grid: str = "int8") -> torch.Tensor:
    """Per-tensor round trip of an embedding table as ORT's dynamic quantizer makes it: quantized as an activation
    (uint8); asymmetric with the table's range widened to hold 0, the scale and zero point computed like ORT's
    `compute_scale_zp` (float64, the scale then stored as float32); the symmetric weight grid when the weights are
    uint8 too."""
    if grid == "uint8":
        return fake_quant_weight(table, per_channel=False, grid="uint8")
    lo = min(float(table.detach().min()), 0.0)
    hi = max(float(table.detach().max()), 0.0)
    scale64 = (hi - lo) / 255.0
    if scale64 < torch.finfo(torch.float32).tiny:
        return table * 0.0  # an all-zero table
    zero_point = float(round(-lo / scale64))  # Python's round: half to even, like numpy
    scale = torch.tensor(scale64, dtype=torch.float32)
    return (_RoundSTE.apply(table / scale) + zero_point).clamp(0, 255).sub(zero_point) * scale


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """uint8 asymmetric per-tensor round trip with the range of `x` itself (ORT's DynamicQuantizeLinear)."""
    lo = x.detach().min().clamp(max=0.0)
    hi = x.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(1e-12)
    zero_point = torch.round(-lo / scale).clamp(0, 255)
    return (_RoundSTE.apply(x / scale) + zero_point).clamp(0, 255).sub(zero_point) * scale


class FakeQuantLinear(nn.Linear):
    """`nn.Linear` computing with 8-bit-rounded inputs and per-channel rounded weights."""

    weight_grid = "int8"  # set per module by make_quantization_aware, from the ORT preset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = fake_quant_weight(self.weight, grid=self.weight_grid)
        return F.linear(fake_quant_activation(x), weight, self.bias)


class FakeQuantEmbedding(nn.Embedding):
    """`nn.Embedding` looking up a per-tensor 8-bit-rounded table (`fake_quant_table`)."""

    weight_grid = "int8"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = fake_quant_table(self.weight, grid=self.weight_grid)
        return F.embedding(
            ids, weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq
        )


_SWAPS = {nn.Linear: FakeQuantLinear, nn.Embedding: FakeQuantEmbedding}


def make_quantization_aware(model: nn.Module, preset: str | None = None) -> nn.Module:
    """Switch every Linear / Embedding of `model` to its fake-quantized twin (in place) on the weight grid of the ORT
    preset (`WEIGHT_GRIDS`; default: the one the config records, else the CPU this runs on, as `distilnlp export`
    chooses) and record the preset in the config."""
    preset = preset or getattr(getattr(model, "config", None), CONFIG_FLAG, None) or default_preset()
    if not isinstance(preset, str):  # a config marked True by an earlier version of this flag
        preset = default_preset()
    if preset not in WEIGHT_GRIDS:
        raise ValueError(f"Unknown quantization preset {preset!r}; one of {', '.join(WEIGHT_GRIDS)}.")
    for module in model.modules():
        if type(module) in _SWAPS:
            module.__class__ = _SWAPS[type(module)]
        if isinstance(module, tuple(_SWAPS.values())):
            module.weight_grid = WEIGHT_GRIDS[preset]
    if hasattr(model, "config"):
        setattr(model.config, CONFIG_FLAG, preset)
    return model


def is_quantization_aware(config) -> bool:
    return bool(getattr(config, CONFIG_FLAG, False))


def qat_nodes_to_exclude(onnx_path) -> list[str]:
    """MatMul nodes of an exported graph with no weight input (attention's activation products): fp32, as in
    quantization-aware training."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and not any(name in initializers for name in n.input)
    ]


def fake_quantized_logits(model: nn.Module, batches, input_names) -> list:
    """Logits (numpy, one array per batch) of `model` made fake-quantized (in place) on the export's `batches`
    (dicts of numpy arrays; `input_names`: the ONNX graph's inputs, which the model takes): the reference its int8
    graph is checked against."""
    make_quantization_aware(model.eval())
    with torch.inference_mode():
        return [
            model(**{name: torch.from_numpy(batch[name].astype("int64")) for name in input_names})
            .logits.float()
            .numpy()
            for batch in batches
        ]
