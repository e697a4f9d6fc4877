"""Quantization-aware distillation: the student trains with the int8 arithmetic ONNX Runtime's dynamic int8 graph
will run, so distillation can correct what quantization breaks.

    make_quantization_aware(student)   # in place; DistillationTrainer does it with quantization_aware=True

Every `nn.Linear` and `nn.Embedding` of the student is switched (class swap, same parameters and state-dict keys, so
`save_pretrained` writes an ordinary checkpoint) to a fake-quantized twin that rounds exactly as ORT does:

- weights: 8-bit symmetric, one scale per output channel (Linear rows; the ONNX MatMul's output columns), on the
  grid of the ORT preset of the CPU (`config.distilnlp_quantization_aware` records it): int8, max|w| / 127 in
  [-127, 127], or uint8 around 128 (avx2), max|w| / 127.5 in [-128, 127];
- embedding tables: the same grid, one scale per table (ORT's quantized Gather);
- Linear inputs: uint8 asymmetric per tensor with the range of the current batch, widened to hold 0
  (ORT's `DynamicQuantizeLinear`).

Rounding passes gradients straight through (straight-through estimator); scales are not trained. The products of
two activations inside attention stay fp32 in training, so `distilnlp export` of a quantization-aware student
keeps those MatMuls in fp32 too (`qat_nodes_to_exclude`), and the int8 graph then reproduces the fake-quantized
PyTorch model up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The config attribute that marks a student trained this way; `distilnlp export` reads it.
CONFIG_FLAG = "distilnlp_quantization_aware"


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)  # half to even, like ONNX QuantizeLinear

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant_weight(weight: torch.Tensor, per_channel: bool = True, unsigned: bool = False) -> torch.Tensor:
    """Symmetric 8-bit round trip of a (out, in) weight (per row) or of any tensor (per tensor).

    ORT's symmetric grids: int8 (`unsigned=False`) uses scale max|w| / 127 and [-127, 127]; uint8 with zero point 128
    (the avx2 preset) uses scale max|w| / 127.5 and [-128, 127] around it.
    """
    absmax = weight.detach().abs().amax(dim=1, keepdim=True) if per_channel else weight.detach().abs().max()
    scale = absmax.clamp_min(1e-12) / (127.5 if unsigned else 127.0)
    return _RoundSTE.apply(weight / scale).clamp(-128 if unsigned else -127, 127) * scale


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """uint8 asymmetric per-tensor round trip with the range of `x` itself (ORT's DynamicQuantizeLinear)."""
    lo = x.detach().min().clamp(max=0.0)
    hi = x.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(1e-12)
    zero_point = torch.round(-lo / scale).clamp(0, 255)
    return (_RoundSTE.apply(x / scale) + zero_point).clamp(0, 255).sub(zero_point) * scale


class FakeQuantLinear(nn.Linear):
    """`nn.Linear` computing with 8-bit-rounded inputs and per-channel 8-bit-rounded weights."""

    unsigned_weights = False  # set per module by make_quantization_aware, from the ORT preset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = fake_quant_weight(self.weight, unsigned=self.unsigned_weights)
        return F.linear(fake_quant_activation(x), weight, self.bias)


class FakeQuantEmbedding(nn.Embedding):
    """`nn.Embedding` looking up a per-tensor 8-bit-rounded table (ORT quantizes a Gather's table with the weight
    type of the preset)."""

    unsigned_weights = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = fake_quant_weight(self.weight, per_channel=False, unsigned=self.unsigned_weights)
        return F.embedding(
            ids, weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq
        )


_SWAPS = {nn.Linear: FakeQuantLinear, nn.Embedding: FakeQuantEmbedding}


def make_quantization_aware(model: nn.Module, preset: str | None = None) -> nn.Module:
    """Switch every Linear / Embedding of `model` to its fake-quantized twin (in place) and record the ORT preset
    (`onnx.quantize.PRESETS`; default: the CPU this runs on, as `distilnlp export` chooses) in the config."""
    from .onnx.quantize import default_preset, unsigned_weights

    preset = preset or getattr(getattr(model, "config", None), CONFIG_FLAG, None) or default_preset()
    if not isinstance(preset, str):  # a config marked True by an earlier version of this flag
        preset = default_preset()
    unsigned = unsigned_weights(preset)
    for module in model.modules():
        if type(module) in _SWAPS:
            module.__class__ = _SWAPS[type(module)]
        if isinstance(module, tuple(_SWAPS.values())):
            module.unsigned_weights = unsigned
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
