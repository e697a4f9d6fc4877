"""What fraction of this CPU's int8 matmul peak an exported int8 student reaches, at batch 1 and batch 32.

1. Peak: ONNX Runtime runs one `MatMulInteger` (uint8 activations (M, K) x int8 weights (K, N) -> int32, the
   operator the dynamic-int8 export uses) on several large shapes with the same thread settings as the model;
   int8 GOPS = 2 M N K / best time, and the peak is the best shape's. An fp32 `MatMul` on the same shapes is
   timed too, for scale.
2. Work: the student's multiply-accumulates at (batch, sequence_length), counted from the int8 ONNX graph's
   matmul-like nodes with the shapes ONNX Runtime computes (`distilnlp.benchmark.macs.matmul_macs`: projections,
   feed-forward, attention's Q K^T and P V, pooler, classifier), checked against the analytic count from the
   config (`bert_macs`) when the model is BERT-like.
3. Achieved: p50 time of the int8 graph at batch 1 and batch 32 (synthetic ids, all positions real) with
   `distilnlp.benchmark.stages`'s timer; achieved GOPS = 2 x MACs / p50, fraction = achieved / peak.
4. Knobs: intra-op threads (1 vs all), graph optimization level (disable / basic / extended / all), and the int8
   graph the export did not choose: unfused (standard ops + MatMulInteger) when the export's is fused
   (QAttention: the default since the export tries ONNX Runtime's transformer fusions first), else the one
   quantized after those fusions (Attention, SkipLayerNormalization, BiasGelu), each timed the same way.

    python benchmarks/int8_peak.py --model runs/student-onnx --sequence_length 128 \
        --output benchmarks/results/int8_peak.json
    python benchmarks/int8_peak.py --model tiny-onnx --quick       # seconds, for tests

Timings on a shared machine are noisy: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from distilnlp.benchmark.macs import bert_macs, matmul_macs, synthetic_inputs
from distilnlp.benchmark.stages import _timings
from distilnlp.runs.artifacts import ONNX_FILE, QUANTIZED_FILE, package_versions

PEAK_SHAPES = [(256, 1024, 1024), (512, 1024, 1024), (1024, 1024, 1024), (512, 2048, 2048), (2048, 512, 2048)]
QUICK_SHAPES = [(64, 128, 128), (128, 256, 256)]
LEVELS = {
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(threads: int, level: str = "all", spinning: bool = True) -> ort.SessionOptions:
    """The model benchmark's settings (`distilnlp.benchmark.stages.onnx_stage`): `threads` intra-op, one inter-op.

    `spinning=False` stops idle pool threads from spin-waiting: on a machine whose cores are shared, a
    spinning thread that is descheduled stalls every parallel section.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[level]
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def matmul_graph(m: int, k: int, n: int, integer: bool) -> bytes:
    """A one-node graph: A (m, k) input x B (k, n) constant; uint8 x int8 -> int32 MatMulInteger, or fp32 MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])],
        initializer=[b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def matmul_peak(shapes, threads: int, runs: int, integer: bool = True) -> dict:
    """{"gops": best 2 M N K / min time over `shapes`, "shapes": [...]}; the minimum of `runs` calls per shape."""
    results = []
    for m, k, n in shapes:
        session = ort.InferenceSession(
            matmul_graph(m, k, n, integer), session_options(threads), ["CPUExecutionProvider"]
        )
        rng = np.random.default_rng(1)
        a = (
            rng.integers(0, 256, (m, k), dtype=np.uint8)
            if integer
            else rng.standard_normal((m, k), np.float32)
        )
        seconds = _timings(lambda s=session, a=a: s.run(None, {"A": a}), warmup=2, runs=runs).min()
        results.append({"m": m, "k": k, "n": n, "ms": seconds * 1e3, "gops": 2 * m * k * n / seconds / 1e9})
    return {"gops": max(r["gops"] for r in results), "shapes": results}


def time_model(
    path: Path,
    batch: int,
    sequence_length: int,
    threads: int,
    runs: int,
    level: str = "all",
    spinning: bool = True,
) -> float:
    """p50 seconds of one call of the graph at `path` on synthetic (batch, sequence_length) inputs."""
    options = session_options(threads, level, spinning)
    session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    feeds = synthetic_inputs(session, batch, sequence_length)
    return float(np.median(_timings(lambda: session.run(None, feeds), warmup=3, runs=runs)))


def unfused_int8(model_dir: Path, scratch: Path) -> Path:
    """fp32 graph -> dynamic int8 without fusions (MatMulInteger, attention products fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = scratch / "unfused_int8.onnx"
    quantize_dynamic(str(model_dir / ONNX_FILE), str(int8_path), weight_type=QuantType.QInt8)
    return int8_path


def is_fused(path: Path) -> bool:
    import onnx

    return any(n.op_type == "QAttention" for n in onnx.load(str(path), load_external_data=False).graph.node)


def fused_int8(model_dir: Path, scratch: Path) -> Path:
    """fp32 graph -> ONNX Runtime's BERT fusions (as distilnlp.onnx.fusion) -> dynamic int8 (QAttention et al.)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    fused = optimize_model(
        str(model_dir / ONNX_FILE),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    fused_path, int8_path = scratch / "fused.onnx", scratch / "fused_int8.onnx"
    # The quantizer cannot type the outputs of fused contrib ops by itself ("Unable to find data type for
    # weight_name"): symbolic shape inference, which knows them, annotates every tensor first.
    typed = SymbolicShapeInference.infer_shapes(fused.model, auto_merge=True)
    onnx.save(typed, str(fused_path))
    quantize_dynamic(str(fused_path), str(int8_path), weight_type=QuantType.QInt8)
    return int8_path


def measure(args) -> dict:
    model_dir = Path(args.model)
    int8_path = model_dir / QUANTIZED_FILE
    threads = args.threads or os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    shapes = QUICK_SHAPES if args.quick else PEAK_SHAPES
    peak = matmul_peak(shapes, threads, args.peak_runs)
    fp32_peak = matmul_peak(shapes, threads, args.peak_runs, integer=False)
    report = {
        "model": str(model_dir),
        "sequence_length": args.sequence_length,
        "threads": threads,
        "peak_int8_gops": peak["gops"],
        "peak_int8_shapes": peak["shapes"],
        "peak_fp32_gops": fp32_peak["gops"],
        "batches": {},
        "knobs": {},
    }
    config = None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        pass
    for batch in args.batches:
        macs = matmul_macs(int8_path, batch, args.sequence_length)
        seconds = time_model(int8_path, batch, args.sequence_length, threads, args.runs)
        achieved = 2 * macs["total"] / seconds / 1e9
        report["batches"][str(batch)] = {
            "macs": macs,
            "analytic_macs": bert_macs(config, batch, args.sequence_length) if config is not None else None,
            "p50_ms": seconds * 1e3,
            "achieved_gops": achieved,
            "fraction_of_int8_peak": achieved / peak["gops"],
        }

    def knob(name: str, path: Path, **kwargs) -> None:
        per_batch = {}
        for batch in args.batches:
            seconds = time_model(
                path,
                batch,
                args.sequence_length,
                kwargs.get("threads", threads),
                args.runs,
                kwargs.get("level", "all"),
                kwargs.get("spinning", True),
            )
            per_batch[str(batch)] = {
                "p50_ms": seconds * 1e3,
                "vs_default": seconds * 1e3 / report["batches"][str(batch)]["p50_ms"],
            }
        report["knobs"][name] = per_batch

    if threads > 1:
        knob("threads=1", int8_path, threads=1)
        knob("allow_spinning=0", int8_path, spinning=False)
    for level in ("disable_all", "basic", "extended"):
        knob(f"graph_optimization_level={level}", int8_path, level=level)
    if (model_dir / ONNX_FILE).is_file():
        knob("fp32 graph (model.onnx)", model_dir / ONNX_FILE)
        report["fused"] = is_fused(int8_path)
        name, build = (
            ("unfused int8 (MatMulInteger only)", unfused_int8)
            if report["fused"]
            else ("int8 after BERT fusions (QAttention)", fused_int8)
        )
        with tempfile.TemporaryDirectory() as scratch:
            try:
                knob(name, build(model_dir, Path(scratch)))
            except Exception as error:  # report the failure, keep the rest of the measurements
                report["knobs"][name] = {"error": f"{type(error).__name__}: {error}"}
    report |= {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "versions": package_versions("onnx", "onnxruntime", "transformers"),
    }
    return report


def markdown(report: dict) -> str:
    lines = [
        f"int8 peak (MatMulInteger, {report['threads']} threads): {report['peak_int8_gops']:.1f} GOPS; "
        f"fp32 MatMul: {report['peak_fp32_gops']:.1f} GFLOPS. Load average {report['load_average_before']:.2f} "
        f"before, {report['load_average_after']:.2f} after.",
        "",
        "| batch | MACs (graph) | MACs (config) | p50 (ms) | achieved GOPS | fraction of int8 peak |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, r in report["batches"].items():
        analytic = "n/a" if r["analytic_macs"] is None else f"{r['analytic_macs'] / 1e6:.1f} M"
        lines.append(
            f"| {batch} | {r['macs']['total'] / 1e6:.1f} M | "
            f"{analytic} | {r['p50_ms']:.3f} "
            f"| {r['achieved_gops']:.1f} | {r['fraction_of_int8_peak']:.1%} |"
        )
    lines += [
        "",
        "| knob | " + " | ".join(f"batch {b} p50 (ms, x default)" for b in report["batches"]) + " |",
    ]
    lines.append("|---|" + "---:|" * len(report["batches"]))
    for name, per_batch in report["knobs"].items():
        if "error" in per_batch:
            lines.append(f"| {name} | failed: {per_batch['error'][:100]} |")
            continue
        cells = " | ".join(f"{r['p50_ms']:.3f} ({r['vs_default']:.2f}x)" for r in per_batch.values())
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="Export folder (model_quantized.onnx, model.onnx, config)."
    )
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    parser.add_argument(
        "--threads", type=int, default=None, help="Intra-op threads; default: os.cpu_count()."
    )
    parser.add_argument("--runs", type=int, default=30, help="Timed calls per model setting (p50).")
    parser.add_argument("--peak_runs", type=int, default=10, help="Timed calls per peak shape (minimum).")
    parser.add_argument("--quick", action="store_true", help="Small peak shapes (a test, not a measurement).")
    parser.add_argument("--output", default=None, help="Write the JSON here (and the table beside it, .md).")
    args = parser.parse_args(argv)
    report = measure(args)
    table = markdown(report)
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        output.with_suffix(".md").write_text(table)
    return report


if __name__ == "__main__":
    main()
