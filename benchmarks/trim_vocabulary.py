"""Vocabulary trimming on BBC News: int8 file size of the trimmed 1-layer student against the teacher's fp32 size,
and its predictions against the untrimmed int8 student on every test text.

Three int8 exports of the same distilled student (default `export_model`: dynamic int8 with the fallback chain,
gated on the validation split):

1. untrimmed;
2. trimmed on every text of the task (train + validation + test), tokenized whole: what
   `distilnlp export --trim_vocabulary` does;
3. trimmed on the same texts truncated at `max_length` (the tokens the model ever sees in this task).

It also records the fp32 ONNX graph's test accuracy, and the choice the default export made for the untrimmed
student (`untrimmed_int8_choice`: every attempt of the fallback chain).

Predictions of 2 and 3 are compared with 1 on every test text (tokenized as the benchmark does: truncated at
`max_length`), as exact top-1 matches and the max |logit difference|.

    distilnlp finetune recipes/finetune_bbc_news.yaml --output_dir runs/teacher
    distilnlp distill recipes/distill_bbc_news.yaml --teacher runs/teacher --output_dir runs/student
    python benchmarks/trim_vocabulary.py --teacher runs/teacher --student runs/student --output benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from distilnlp.data import DataArguments, load_task_data
from distilnlp.onnx import ExportArguments, ExportTexts, export_model
from distilnlp.onnx.vocabulary import trim_vocabulary
from distilnlp.runs.artifacts import package_versions


def int8_logits(
    export_dir: Path, texts: list[str], max_length: int, file_name: str = "model_quantized.onnx"
) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_dir / file_name), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    names = [i.name for i in session.get_inputs()]
    out = []
    for start in range(0, len(texts), 32):
        enc = tokenizer(
            texts[start : start + 32],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        out.append(session.run(None, {n: enc[n].astype(np.int64) for n in names})[0])
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher", required=True, help="Fine-tuned teacher folder (its fp32 size is the base)."
    )
    parser.add_argument("--student", required=True, help="Distilled student folder.")
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument(
        "--work_dir", default=None, help="Where the exports go (default: a temporary folder)."
    )
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()

    data_args = DataArguments(dataset=args.dataset, max_length=args.max_length)
    data = load_task_data(data_args)
    text, label = data_args.text_column, data_args.label_column
    all_texts = [t for split in data.values() for t in split[text]]
    test_texts, test_labels = list(data["test"][text]), np.array(data["test"][label])
    val_texts, val_labels = list(data["validation"][text]), list(data["validation"][label])
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="trim-bench-"))
    teacher_bytes = sum(p.stat().st_size for p in Path(args.teacher).glob("*.safetensors"))

    texts = ExportTexts(val_texts, val_labels, vocabulary_texts=all_texts, max_length=args.max_length)
    exports = {"untrimmed": export_model(ExportArguments(args.student, str(work / "untrimmed")), texts)}
    exports["trimmed (all task texts)"] = export_model(
        ExportArguments(args.student, str(work / "trimmed"), trim_vocabulary=True), texts
    )
    truncated = trim_vocabulary(
        args.student, work / "student-trimmed-128", all_texts, max_length=args.max_length
    )
    exports[f"trimmed (task texts cut at {args.max_length} tokens)"] = export_model(
        ExportArguments(str(work / "student-trimmed-128"), str(work / "trimmed-128")), texts
    )

    reference = int8_logits(work / "untrimmed", test_texts, args.max_length)
    fp32 = int8_logits(work / "untrimmed", test_texts, args.max_length, "model.onnx")
    rows = [
        {
            "export": "fp32 ONNX (untrimmed)",
            "fp32_bytes": (work / "untrimmed" / "model.onnx").stat().st_size,
            "test_accuracy": float((fp32.argmax(-1) == test_labels).mean()),
            "int8_top1_agreement_with_fp32": float((fp32.argmax(-1) == reference.argmax(-1)).mean()),
        }
    ]
    for name, result in exports.items():
        summary = json.loads(result.summary_path.read_text())
        vocab = summary["vocabulary"] or (
            {k: v for k, v in asdict(truncated).items() if k != "kept_ids"} if "cut at" in name else None
        )
        logits = (
            reference if name == "untrimmed" else int8_logits(result.output_dir, test_texts, args.max_length)
        )
        size = result.quantized_path.stat().st_size
        rows.append(
            {
                "export": name,
                "int8_bytes": size,
                "fraction_of_teacher_fp32": size / teacher_bytes,
                "vocab_size": None if vocab is None else vocab["vocab_size_after"],
                "range_rows": None if vocab is None else vocab["range_rows"],
                "int8_choice": summary["int8_choice"]["chosen"],
                "fp32_nodes": summary["int8_choice"]["fp32_nodes"],
                "test_accuracy": float((logits.argmax(-1) == test_labels).mean()),
                "identical_predictions": int((logits.argmax(-1) == reference.argmax(-1)).sum()),
                "max_abs_logit_diff_vs_untrimmed": float(np.abs(logits - reference).max()),
            }
        )
    results = {
        "teacher": args.teacher,
        "teacher_fp32_bytes": teacher_bytes,
        "student": args.student,
        "dataset": args.dataset,
        "max_length": args.max_length,
        "num_task_texts": len(all_texts),
        "num_test_texts": len(test_texts),
        "exports": rows,
        "untrimmed_int8_choice": json.loads(exports["untrimmed"].summary_path.read_text())["int8_choice"],
        "versions": package_versions("torch", "transformers", "onnxruntime"),
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "trim_vocabulary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"teacher fp32: {teacher_bytes / 1e6:.1f} MB; {len(test_texts)} test texts")
    print("| export | int8 MB | x teacher fp32 | vocab | test acc | same top-1 as untrimmed | max |dlogit| |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"fp32 ONNX test accuracy {rows[0]['test_accuracy']:.4f}; default int8 agrees on "
        f"{rows[0]['int8_top1_agreement_with_fp32']:.2%} of test texts"
    )
    for r in rows[1:]:
        print(
            f"| {r['export']} | {r['int8_bytes'] / 1e6:.2f} | {r['fraction_of_teacher_fp32']:.4f} | "
            f"{r['vocab_size'] or 'full'} | {r['test_accuracy']:.4f} | {r['identical_predictions']}/{len(test_texts)} "
            f"| {r['max_abs_logit_diff_vs_untrimmed']:.2g} |"
        )


if __name__ == "__main__":
    main()
