"""Sentence-embedding distillation on BBC News: students of 1-3 layers (fp32 / int8 ONNX) against the packaged
all-MiniLM-L6-v2 teacher (PyTorch / int8 ONNX) and model2vec distilled from the same local teacher folder.

Every model is scored by `distilnlp.benchmark.embedding_eval` (topic and sentence classification, clustering,
retrieval; only articles outside the distillation text) and timed in the same process, one thread:
throughput at batch 32 (sentences / s over the test sentences) and batch-1 latency (median ms). Students are
distilled by `distill_embeddings` (the `distill-embeddings` command) on the bundled corpus' transfer articles.

Resumable: each run writes runs/<name>.json under --output as it finishes; a finished run is skipped. After every
run the summary (embeddings.json, embeddings.md, embeddings.png: average score vs throughput, front marked) is
rewritten, so a partial benchmark is never lost.

    OMP_NUM_THREADS=1 python benchmarks/embeddings.py --work_dir /tmp/emb-bench --output benchmarks/results/embeddings
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distilnlp.benchmark.embedding_eval import TASKS, EvaluationData, embed_all, score_embeddings
from distilnlp.commands.arguments import resolve_model_path
from distilnlp.commands.embedding_distill import EmbeddingDistillArguments, distill_embeddings
from distilnlp.commands.embeddings import export_texts
from distilnlp.distill.embedding_trainer import EmbeddingDistillationArguments
from distilnlp.onnx.embedder import OnnxEmbedder
from distilnlp.onnx.embedding_export import EmbeddingExportArguments, export_embedder
from distilnlp.runs.sentence_folder import load_sentence_model

LOSSES = {  # name -> (mse, cosine, similarity KL) weights
    "mse": (1.0, 0.0, 0.0),
    "mse+cos": (1.0, 1.0, 0.0),
    "mse+cos+sim": (1.0, 1.0, 1.0),
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work_dir", default="/tmp/emb-bench")
    p.add_argument("--output", default="benchmarks/results/embeddings")
    p.add_argument("--layers", default="1,2,3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--main_loss", default="mse+cos+sim", choices=list(LOSSES))
    p.add_argument("--ablation_layers", type=int, default=2)
    p.add_argument("--max_texts", type=int, default=2000, help="distillation texts (windows)")
    p.add_argument("--window_words", default="8,32,96")
    p.add_argument("--max_seq_length", type=int, default=128, help="training and evaluation token limit")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning_rate", type=float, default=2e-4)
    p.add_argument("--sentences", default="1000,500", help="sentences to fit / test the sentence task on")
    p.add_argument("--speed_texts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="comma-separated run names to run (default: all, in order)")
    p.add_argument(
        "--speed_pass",
        action="store_true",
        help="only time every finished run's model again, interleaved in one process (speed.json)",
    )
    p.add_argument("--speed_rounds", type=int, default=3)
    p.add_argument(
        "--extra", default="", help="more students after the plan: LAYERS:LOSS:SEED,... e.g. 3:mse:0"
    )
    return p.parse_args()


# ------------------------------------------------------------------------------------------------- timing


def speed(encode, texts: list[str]) -> dict:
    """Sentences/s at batch 32 over `texts`, median batch-1 latency (ms) over the first 64, one process."""
    encode(texts[:32], 32)  # warm-up: session / kernel initialisation
    start = time.perf_counter()
    encode(texts, 32)
    throughput = len(texts) / (time.perf_counter() - start)
    latencies = []
    for text in texts[:64]:
        start = time.perf_counter()
        encode([text], 1)
        latencies.append((time.perf_counter() - start) * 1000)
    return {"throughput_b32": throughput, "latency_b1_ms": statistics.median(latencies)}


def torch_encoder(model):
    model.eval()
    return lambda texts, batch=32: model.encode(list(texts), batch_size=batch, convert_to_numpy=True)


def onnx_encoder(folder: Path, file_name: str, max_length: int, threads: int):
    embedder = OnnxEmbedder(folder, file_name, num_threads=threads, max_length=max_length)
    return lambda texts, batch=32: embedder.encode(list(texts), batch_size=batch)


# --------------------------------------------------------------------------------------------------- runs


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(args.work_dir)
        self.out = Path(args.output)
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        fit, test = (int(x) for x in args.sentences.split(","))
        self.data = EvaluationData.load((fit, test))
        self.teacher_path = resolve_model_path("minilm")
        self._teacher_embeddings = None

    def done(self, name: str) -> bool:
        return (self.out / "runs" / f"{name}.json").is_file()

    def record(self, name: str, result: dict) -> None:
        (self.out / "runs" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        logging.info(
            "%s: %s", name, json.dumps({k: result[k] for k in ("average", "throughput_b32") if k in result})
        )

    def teacher_embeddings(self) -> dict:
        path = self.work / "teacher_eval_embeddings.npz"
        if self._teacher_embeddings is None and path.is_file():
            self._teacher_embeddings = dict(np.load(path))
        return self._teacher_embeddings

    def evaluate(self, name: str, encode, kind: str, extra: dict | None = None) -> dict:
        start = time.perf_counter()
        embeddings = embed_all(lambda texts: encode(texts, 32), self.data)
        seconds = time.perf_counter() - start
        if name == "teacher-torch":
            np.savez(self.work / "teacher_eval_embeddings.npz", **embeddings)
            self._teacher_embeddings = embeddings
        result = {
            "name": name,
            "kind": kind,
            **score_embeddings(embeddings, self.data, self.teacher_embeddings()),
        }
        result.update(speed(encode, self.data.sentences_test[: self.args.speed_texts]))
        result.update({"eval_seconds": seconds, "sizes": self.data.sizes(), **(extra or {})})
        self.record(name, result)
        return result

    # ---------------------------------------------------------------------------------- the models

    def teacher_torch(self):
        model = load_sentence_model(self.teacher_path, max_seq_length=self.args.max_seq_length)
        self.evaluate("teacher-torch", torch_encoder(model), "teacher", {"layers": 6, "precision": "fp32"})

    def export(self, model_dir: Path, target: Path) -> dict:
        if (target / "distilnlp_export.json").is_file() and (target / "model_quantized.onnx").is_file():
            return json.loads((target / "distilnlp_export.json").read_text())
        settings = EmbeddingExportArguments(str(model_dir), str(target), max_length=self.args.max_seq_length)
        settings.overwrite = True
        return export_embedder(settings, export_texts(128))

    def teacher_int8(self):
        summary = self.export(Path(self.teacher_path), self.work / "teacher-onnx")
        encode = onnx_encoder(
            self.work / "teacher-onnx", "model_quantized.onnx", self.args.max_seq_length, self.args.threads
        )
        self.evaluate(
            "teacher-int8", encode, "teacher", {"layers": 6, "precision": "int8", "int8": summary["int8"]}
        )

    def model2vec(self):
        from model2vec.distill import distill

        folder = self.work / "model2vec"
        start = time.perf_counter()
        if not (folder / "model.safetensors").is_file():
            distill(model_name=self.teacher_path, pca_dims=256).save_pretrained(str(folder))
        distill_seconds = time.perf_counter() - start
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(str(folder))
        encode = lambda texts, batch=32: model.encode(list(texts), batch_size=batch, show_progress_bar=False)  # noqa: E731
        self.evaluate(
            "model2vec", encode, "model2vec", {"precision": "fp32", "distill_seconds": distill_seconds}
        )

    def student(self, layers: int, seed: int, loss: str):
        base = f"student-{layers}l-{loss}-s{seed}"
        if self.done(f"{base}-int8") and self.done(f"{base}-fp32"):
            return
        folder = self.work / base
        start = time.perf_counter()
        if not (folder / "modules.json").is_file():
            self.distill(folder, layers, seed, loss)
        train_seconds = time.perf_counter() - start
        summary = self.export(folder, self.work / f"{base}-onnx")
        extra = {"layers": layers, "seed": seed, "loss": loss, "train_seconds": train_seconds}
        torch_speed = speed(
            torch_encoder(load_sentence_model(folder, role="student")),
            self.data.sentences_test[: self.args.speed_texts],
        )
        for precision, file_name in (("fp32", "model.onnx"), ("int8", "model_quantized.onnx")):
            encode = onnx_encoder(
                self.work / f"{base}-onnx", file_name, self.args.max_seq_length, self.args.threads
            )
            more = {"precision": precision, "torch_fp32_speed": torch_speed}
            if precision == "int8":
                more["int8"] = summary["int8"]
            self.evaluate(f"{base}-{precision}", encode, "student", {**extra, **more})

    def distill(self, folder: Path, layers: int, seed: int, loss: str):
        mse, cosine, similarity = LOSSES[loss]
        args = EmbeddingDistillArguments(
            teacher="minilm",
            student_layers=layers,
            window_words=self.args.window_words,
            max_texts=self.args.max_texts,
            max_seq_length=self.args.max_seq_length,
            teacher_cache=str(self.work / "teacher-cache"),
        )
        training = EmbeddingDistillationArguments(
            output_dir=str(folder),
            seed=seed,
            data_seed=0,
            num_train_epochs=self.args.epochs,
            per_device_train_batch_size=32,
            learning_rate=self.args.learning_rate,
            warmup_steps=0.1,
            mse_weight=mse,
            cosine_weight=cosine,
            similarity_weight=similarity,
            save_strategy="no",
            report_to=[],
            logging_steps=10,
            disable_tqdm=True,
        )
        distill_embeddings(args, training)

    def plan(self) -> list[tuple[str, callable]]:
        """Most informative first (the machine may run out of time): the teacher, one seed of the ablation depth,
        model2vec, the other depths, the teacher's int8 graph, more seeds of the ablation depth, the loss
        ablation, then more seeds of the other depths."""
        layers = [int(x) for x in self.args.layers.split(",")]
        seeds = [int(x) for x in self.args.seeds.split(",")]
        main, depth = self.args.main_loss, self.args.ablation_layers

        def student(n, seed, loss=main):
            return (f"student-{n}l-{loss}-s{seed}", lambda: self.student(n, seed, loss))

        steps = [
            ("teacher-torch", self.teacher_torch),
            student(depth, seeds[0]),
            ("model2vec", self.model2vec),
        ]
        steps += [student(n, seeds[0]) for n in layers if n != depth]
        steps += [("teacher-int8", self.teacher_int8)]
        steps += [student(depth, seed) for seed in seeds[1:]]
        steps += [student(depth, seeds[0], loss) for loss in LOSSES if loss != main]
        steps += [student(n, seed) for seed in seeds[1:] for n in layers if n != depth]
        for spec in filter(None, self.args.extra.split(",")):
            n, loss, seed = spec.split(":")
            steps.append(student(int(n), int(seed), loss))
        return steps


def main():
    args = parse()
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    if args.speed_pass:
        speed_pass(bench)
        summarize(bench.out, vars(args))
        return
    only = set(args.only.split(",")) if args.only else None
    for name, step in bench.plan():
        if only and name not in only:
            continue
        done = bench.done(name) or (bench.done(f"{name}-int8") and bench.done(f"{name}-fp32"))
        if done:
            continue
        start = time.perf_counter()
        logging.info("start %s", name)
        step()
        logging.info("finished %s in %.0f s", name, time.perf_counter() - start)
        summarize(bench.out, vars(args))
    summarize(bench.out, vars(args))


def speed_pass(bench: Bench) -> None:
    """Time every finished run's model again in this one process, `speed_rounds` rounds interleaved (so a
    change in the shared machine's load hits every model alike); medians go to speed.json."""
    args, work = bench.args, bench.work
    names = sorted(json.loads(p.read_text())["name"] for p in (bench.out / "runs").glob("*.json"))
    encoders = {}
    for name in names:
        if name == "teacher-torch":
            model = load_sentence_model(bench.teacher_path, max_seq_length=args.max_seq_length)
            encoders[name] = torch_encoder(model)
        elif name == "model2vec":
            from model2vec import StaticModel

            static = StaticModel.from_pretrained(str(work / "model2vec"))
            encoders[name] = lambda t, b=32, m=static: m.encode(
                list(t), batch_size=b, show_progress_bar=False
            )
        else:
            base, precision = name.rsplit("-", 1)
            folder = work / ("teacher-onnx" if base == "teacher" else f"{base}-onnx")
            file_name = "model.onnx" if precision == "fp32" else "model_quantized.onnx"
            encoders[name] = onnx_encoder(folder, file_name, args.max_seq_length, args.threads)
    texts = bench.data.sentences_test[: args.speed_texts]
    rounds: dict[str, list[dict]] = {name: [] for name in encoders}
    for index in range(args.speed_rounds):
        for name, encode in encoders.items():
            rounds[name].append(speed(encode, texts))
            logging.info("speed round %d %s: %s", index, name, rounds[name][-1])
    result = {
        name: {
            "throughput_b32": statistics.median(r["throughput_b32"] for r in measured),
            "latency_b1_ms": statistics.median(r["latency_b1_ms"] for r in measured),
            "rounds": measured,
        }
        for name, measured in rounds.items()
    }
    (bench.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- summary


def _group(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        key = (
            run["name"].rsplit("-s", 1)[0] + "-" + run["precision"]
            if run["kind"] == "student"
            else run["name"]
        )
        groups.setdefault(key, []).append(run)
    return groups


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(out: Path, settings: dict) -> dict:
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not runs:
        return {}
    timed = json.loads((out / "speed.json").read_text()) if (out / "speed.json").is_file() else {}
    for run in runs:  # the speed pass's interleaved timings replace those taken beside each evaluation
        if run["name"] in timed:
            run["speed_during_evaluation"] = {k: run[k] for k in ("throughput_b32", "latency_b1_ms")}
            run.update({k: timed[run["name"]][k] for k in ("throughput_b32", "latency_b1_ms")})
    teacher = next((r for r in runs if r["name"] == "teacher-torch"), None)
    rows = {}
    for key, group in _group(runs).items():
        row = {"runs": len(group), "seeds": sorted(r.get("seed") for r in group if "seed" in r)}
        for metric in (
            *TASKS,
            "bbc_retrieval_recall_at_1",
            "average",
            "teacher_cosine",
            "throughput_b32",
            "latency_b1_ms",
        ):
            values = [r[metric] for r in group if r.get(metric) is not None and r[metric] == r[metric]]
            if values:
                row[metric], row[metric + "_std"] = _mean_std(values)
        if teacher:
            row["kept"] = row["average"] / teacher["average"]
            row["speedup_vs_teacher_torch"] = row["throughput_b32"] / teacher["throughput_b32"]
        rows[key] = row
    result = {"settings": settings, "sizes": runs[0]["sizes"], "rows": rows, "front": pareto(rows)}
    result["speed_source"] = "speed.json (one interleaved pass)" if timed else "timed beside each evaluation"
    (out.parent / f"{out.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out.parent / f"{out.name}.md").write_text(markdown(result))
    plot(result, out.parent / f"{out.name}.png")
    return result


def pareto(rows: dict) -> list[str]:
    """Rows no other row beats on both average score and throughput."""
    return sorted(
        name
        for name, r in rows.items()
        if not any(
            o["average"] >= r["average"]
            and o["throughput_b32"] >= r["throughput_b32"]
            and (o["average"], o["throughput_b32"]) != (r["average"], r["throughput_b32"])
            for o in rows.values()
        )
    )


def markdown(result: dict) -> str:
    sizes = result["sizes"]
    lines = [
        "# Sentence-embedding distillation on BBC News (benchmarks/embeddings.py)",
        "",
        f"Evaluation: {sizes['articles']} articles outside the distillation text (topic: fit {sizes['topic_fit']}, "
        f"test {sizes['topic_test']}; sentences: fit {sizes['sentences_fit']}, test {sizes['sentences_test']}); "
        f"settings: {json.dumps(result['settings'])}. Mean ± std over the seeds a row lists. Speed: one thread, "
        "sentences/s at batch 32 over the first test sentences and median batch-1 latency, "
        f"{result['speed_source']} (a shared 2-core machine: the ratios are the figures to read). * = on the "
        "front (no row is better in both average and throughput).",
        "",
        "| model | runs | "
        + " | ".join(TASKS)
        + " | R@1 | average | kept | cos(teacher) | sent/s b32 | x teacher | ms b1 |",
        "|" + "---|" * (len(TASKS) + 10),
    ]
    for name, r in sorted(result["rows"].items(), key=lambda kv: -kv[1]["average"]):

        def f(metric, digits=4, r=r):
            if metric not in r:
                return ""
            std = r.get(metric + "_std", 0.0)
            return f"{r[metric]:.{digits}f}" + (f" ± {std:.{digits}f}" if r["runs"] > 1 else "")

        star = "*" if name in result["front"] else ""
        lines.append(
            f"| {name}{star} | {r['runs']} | "
            + " | ".join(f(t) for t in TASKS)
            + f" | {f('bbc_retrieval_recall_at_1')} | {f('average')} | {r.get('kept', 0):.1%} | {f('teacher_cosine', 3)}"
            + f" | {r['throughput_b32']:.0f} | {r.get('speedup_vs_teacher_torch', 0):.1f}x | {r['latency_b1_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in result["rows"].items():
        on_front = name in result["front"]
        ax.errorbar(
            r["throughput_b32"],
            r["average"],
            yerr=r.get("average_std", 0),
            fmt="o",
            color="tab:red" if on_front else "tab:blue",
        )
        ax.annotate(
            name, (r["throughput_b32"], r["average"]), fontsize=7, xytext=(4, 2), textcoords="offset points"
        )
    front = sorted(
        (result["rows"][n]["throughput_b32"], result["rows"][n]["average"]) for n in result["front"]
    )
    if front:
        ax.plot(*zip(*front, strict=True), "--", color="tab:red", label="front")
    ax.set_xscale("log")
    ax.set_xlabel("sentences / s at batch 32 (one thread, log scale)")
    ax.set_ylabel("average score (4 BBC tasks)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
