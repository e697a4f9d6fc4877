"""Does ONNX Runtime's dynamic int8 graph of a quantization-aware student compute what its fake-quantized PyTorch
self computes? Standalone (onnxruntime only, no Optimum): a tiny BERT (tests/tiny.py) trained a few
quantization-aware steps per preset grid, exported with `torch.onnx.export`, quantized unfused and fused
(`optimize_model` + symbolic shape inference, EmbedLayerNormalization fusion off and on) with
`ort_quantizer_settings(preset)`, then compared:

- logits: int8 graph vs the fake-quantized student (and the embedding grid of the old emulation, int8 symmetric);
- per layer: every LayerNormalization output of the unfused graph vs the PyTorch module's;
- every MatMulInteger's int32 output vs numpy's exact product of its own inputs, and how many of those sums a
  saturating VPMADDUBSW kernel (U8S8 on AVX2 / AVX-512 without VNNI: adjacent-pair sums clamped to int16) would change.

    nice python benchmarks/qat_ort_parity.py [--presets avx512_vnni avx512 avx2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper, shape_inference
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny import EXPORT_WORDS, save_wordpiece_model  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

from distilnlp.int8 import quantization_aware as qa  # noqa: E402

TEXTS = [
    " ".join(EXPORT_WORDS[(7 * i + 13 * j) % len(EXPORT_WORDS)] for j in range(3 + i % 20)) for i in range(48)
]
NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def plain(model):
    for m in model.modules():
        if isinstance(m, qa.FakeQuantLinear):
            m.__class__ = nn.Linear
        elif isinstance(m, qa.FakeQuantEmbedding):
            m.__class__ = nn.Embedding
    return model


def export(model, enc, path):
    torch.onnx.export(
        plain(model),
        tuple(enc[n] for n in NAMES),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=NAMES,
        output_names=["logits"],
        dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in NAMES}, "logits": {0: "batch"}},
    )


def quantize(src, dst, preset, api="ONNXQuantizer"):
    from onnxruntime.quantization import QuantizationMode, QuantType, quantize_dynamic
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    s = qa.ort_quantizer_settings(preset)
    exclude = qa.qat_nodes_to_exclude(src)
    if api == "quantize_dynamic":
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=s["per_channel"],
            reduce_range=s["reduce_range"],
            weight_type=getattr(QuantType, s["weight_type"]),
            nodes_to_exclude=exclude,
            extra_options=s["extra_options"],
        )
        return
    q = ONNXQuantizer(
        onnx.load(str(src)),
        s["per_channel"],
        s["reduce_range"],
        QuantizationMode.IntegerOps,
        False,
        getattr(QuantType, s["weight_type"]),
        getattr(QuantType, s["activation_type"]),
        None,
        [],
        exclude,
        list(IntegerOpsRegistry),
        {k: v for k, v in s["extra_options"].items() if k != "MatMulConstBOnly"},
    )
    q.quantize_model()
    q.model.save_model_to_file(str(dst))


def fuse(src, dst, embed_layer_norm):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = embed_layer_norm
    opt = optimize_model(
        str(src), model_type="bert", num_heads=4, hidden_size=32, opt_level=1, optimization_options=options
    )
    if not any(o.domain == "com.microsoft" for o in opt.model.opset_import):
        opt.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(SymbolicShapeInference.infer_shapes(opt.model, auto_merge=True), str(dst))


def session(model, all_outputs=False):
    m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    if all_outputs:
        m = shape_inference.infer_shapes(m)
        known = {v.name: v for v in m.graph.value_info}
        have = {o.name for o in m.graph.output}
        for n in m.graph.node:
            for o in n.output:
                if o in known and o not in have:
                    m.graph.output.append(known[o])
                    have.add(o)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return m, ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def saturating_u8s8(a, b):
    """sum_k a*b with VPMADDUBSW's int16 saturation of each adjacent pair (k even, k+1), K padded with zeros."""
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros(a.shape[:-1] + (1,), np.int64)], -1)
        b = np.concatenate([b, np.zeros((1,) + b.shape[1:], np.int64)], 0)
    pairs = a[..., 0::2, None] * b[0::2] + a[..., 1::2, None] * b[1::2]
    return np.clip(pairs, -32768, 32767).sum(-2)


def matmul_integer_report(model_path, feeds):
    m, s = session(model_path, all_outputs=True)
    vals = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=True))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    rows = []
    for n in m.graph.node:
        if n.op_type != "MatMulInteger":
            continue
        a, b, za, zb = (inits.get(x, vals.get(x)) for x in n.input)
        exact = np.matmul(a.astype(np.int64) - za.astype(np.int64), b.astype(np.int64) - zb.astype(np.int64))
        ort_mismatch = int((exact != vals[n.output[0]]).sum())
        saturated = None
        if (
            b.dtype == np.int8
        ):  # what the U8S8 kernel without VNNI would compute: raw a*b, then - za * colsum(b)
            sat = saturating_u8s8(a, b) - za.astype(np.int64) * b.astype(np.int64).sum(0)
            saturated = int((sat != exact).sum())
        rows.append(
            (
                n.name.split("/")[-2] if "/" in n.name else n.name,
                b.dtype.name,
                int(np.abs(b).max()),
                ort_mismatch,
                saturated,
                exact.size,
            )
        )
    return rows


def layer_report(model_path, model, enc, feeds):
    """max |ORT - PyTorch| of each LayerNormalization output of an unfused graph."""
    m, s = session(model_path, all_outputs=True)
    vals = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds), strict=True))
    captured = {}
    hooks = [
        mod.register_forward_hook(lambda mod, i, o, name=name: captured.__setitem__(name, o.detach().numpy()))
        for name, mod in model.named_modules()
        if isinstance(mod, nn.LayerNorm)
    ]
    with torch.inference_mode():
        model(**enc)
    for h in hooks:
        h.remove()
    out = {}
    for n in m.graph.node:
        if n.op_type == "LayerNormalization":
            name = n.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            if name in captured:
                out[name] = float(np.abs(vals[n.output[0]] - captured[name]).max())
    return out


def qat_student(folder, preset, enc, steps=6):
    model = BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    qa.make_quantization_aware(model, preset)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.arange(len(TEXTS)) % 3
    for _ in range(steps):  # moves the weights and the LayerNorm gammas / betas off their initial 1 / 0
        loss = nn.functional.cross_entropy(model(**enc).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["avx512_vnni", "avx512", "avx2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?"
    )
    print(
        f"CPU: {cpu}; avx512_vnni={'avx512_vnni' in flags} avx_vnni={' avx_vnni' in flags} "
        f"amx_int8={'amx_int8' in flags}; onnxruntime {ort.__version__}, torch {torch.__version__}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="qat_ort_parity_"))
    folder = save_wordpiece_model(tmp / "student", layers=1, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    feeds = {n: enc[n].numpy().astype(np.int64) for n in NAMES}
    for preset in args.presets:
        grid = qa.WEIGHT_GRIDS[preset]
        print(f"\n== preset {preset}: weight grid {grid}, quantizer {qa.ort_quantizer_settings(preset)}")
        model = qat_student(folder, preset, enc)
        with torch.inference_mode():
            reference = model(**enc).logits.numpy()
            for m in model.modules():  # the old emulation: embedding tables on the weight grid
                if isinstance(m, qa.FakeQuantEmbedding):
                    m.forward = lambda ids, m=m, grid=grid: nn.functional.embedding(
                        ids, qa.fake_quant_weight(m.weight, per_channel=False, grid=grid)
                    )
            old_reference = model(**enc).logits.numpy()
            for m in model.modules():
                m.__dict__.pop("forward", None)
        fp32 = tmp / f"{preset}.onnx"
        export(model, enc, fp32)
        qa.make_quantization_aware(model, preset)
        with torch.inference_mode():
            fp32_logits = plain(model)(**enc).logits.numpy()
        qa.make_quantization_aware(model, preset)
        graphs = {"unfused": tmp / f"{preset}_int8.onnx"}
        quantize(fp32, graphs["unfused"], preset)
        quantize(fp32, tmp / f"{preset}_int8_qd.onnx", preset, api="quantize_dynamic")
        same = [(n.op_type, list(n.input)) for n in onnx.load(str(graphs["unfused"])).graph.node] == [
            (n.op_type, list(n.input)) for n in onnx.load(str(tmp / f"{preset}_int8_qd.onnx")).graph.node
        ]
        print(
            f"quantize_dynamic(MatMulConstBOnly) gives the same nodes as ONNXQuantizer(nodes_to_exclude): {same}"
        )
        for eln in (False, True):
            fused = tmp / f"{preset}_fused_eln{int(eln)}.onnx"
            fuse(fp32, fused, eln)
            graphs[f"fused, EmbedLayerNorm {'on' if eln else 'off'}"] = (
                tmp / f"{preset}_fused_eln{int(eln)}_int8.onnx"
            )
            quantize(fused, graphs[f"fused, EmbedLayerNorm {'on' if eln else 'off'}"], preset)
        for name, path in graphs.items():
            logits = session(path)[1].run(None, feeds)[0]
            ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            kept = {
                k: ops[k]
                for k in ("QEmbedLayerNormalization", "QAttention", "MatMulInteger", "MatMul")
                if ops[k]
            }
            rows = float((np.abs(logits - reference).max(-1) <= 1e-4).mean())
            print(
                f"{name:28s} |int8 - fake-quant| {np.abs(logits - reference).max():.2e} ({rows:.0%} rows <= 1e-4)  "
                f"(old embedding grid: {np.abs(logits - old_reference).max():.2e}; "
                f"int8 - fp32: {np.abs(logits - fp32_logits).max():.2e})  {kept}"
            )
        print(
            "per layer (unfused), max |ORT - PyTorch| of each LayerNorm output:",
            {k: f"{v:.1e}" for k, v in layer_report(graphs["unfused"], model, enc, feeds).items()},
        )
        for label, path in (("unfused", graphs["unfused"]), ("fused", graphs["fused, EmbedLayerNorm off"])):
            for row in matmul_integer_report(path, feeds):
                name, dtype, wmax, mismatch, saturated, size = row
                print(
                    f"  {label} MatMulInteger {name:12s} B {dtype:5s} max|q| {wmax:3d}: ORT != exact {mismatch}/{size}"
                    + (
                        f"; a saturating U8S8 kernel would change {saturated}/{size}"
                        if saturated is not None
                        else ""
                    )
                )


if __name__ == "__main__":
    main()
