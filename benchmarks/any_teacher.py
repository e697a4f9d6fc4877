"""Any teacher on BBC News: soft labels from a file vs the live teacher, and a teacher of another tokenizer.

One run, every student the packaged all-MiniLM-L6-v2 cut to `--student_layers` layers (`create_student`)
with a fresh 5-label head, the same initialisation and data order per seed, the same schedule:

- `hard`: fine-tuned on the labels alone (baseline);
- `live`: distilled from the fine-tuned MiniLM teacher, run live;
- `file`: distilled from that teacher's probabilities, exported to JSONL by `export_soft_labels.py` "as an
  outside tool would", with no teacher model at all (`--soft_labels` path: the file becomes a teacher cache);
- `cross`: distilled from a teacher with *another tokenizer*: a byte-level BPE tokenizer trained here on the
  training texts with `tokenizers`, and a small RoBERTa (random init) fine-tuned on it; the student keeps
  MiniLM's WordPiece tokenizer (`TeacherInputsCollator`).

Writes any_teacher.json / any_teacher.md (mean ± std over seeds, test-set size).

    python benchmarks/any_teacher.py --output benchmarks/results [--teacher runs/teacher] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaTokenizerFast,
    Trainer,
)

from distilnlp import (
    DistillationTrainer,
    DistillationTrainingArguments,
    TeacherInputsCollator,
    create_student,
)
from distilnlp.benchmark.metrics import compute_classification_metrics
from distilnlp.commands.arguments import FinetuneArguments, resolve_model_path
from distilnlp.commands.stages import finetune
from distilnlp.commands.steps import evaluate_on, prepare_data
from distilnlp.data import DataArguments, load_bbc_news, load_task_data, read_soft_labels, tokenize_task_data
from distilnlp.distill.stage_arguments import StageTrainingArguments
from distilnlp.teacher_cache import build_soft_label_cache

HERE = Path(__file__).parent
METHODS = ("hard", "live", "file", "cross")


def quiet_args(folder: Path, seed: int, **extra) -> dict:
    return dict(output_dir=str(folder), per_device_eval_batch_size=64, save_strategy="no", report_to="none",
                use_cpu=True, disable_tqdm=True, logging_steps=50, seed=seed, data_seed=seed, **extra)  # fmt: skip


def minilm_teacher(cli, work: Path) -> str:
    if cli.teacher:
        return cli.teacher
    folder = work / "teacher"
    if (folder / "config.json").exists():  # a finished earlier run in the same --work folder
        return str(folder)
    args = StageTrainingArguments(**quiet_args(folder, 42, num_train_epochs=cli.teacher_epochs, learning_rate=cli.teacher_learning_rate,
                                          per_device_train_batch_size=16, warmup_ratio=0.1, weight_decay=0.01))  # fmt: skip
    base = "minilm"
    if (
        cli.teacher_layers < 6
    ):  # a shallower MiniLM teacher: its first layers, then fine-tuned like the full one
        base = str(work / "minilm-cut")
        create_student(AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"), num_labels=5),
                       cli.teacher_layers, "first").save_pretrained(base)  # fmt: skip
        AutoTokenizer.from_pretrained(resolve_model_path("minilm")).save_pretrained(base)
    finetune(FinetuneArguments(base), data_arguments(cli), args)
    return str(folder)


def data_arguments(cli) -> DataArguments:
    return DataArguments(max_length=cli.max_length, max_train_samples=cli.max_train_samples)


def bpe_teacher(cli, work: Path, data_args: DataArguments) -> tuple:
    """A byte-level BPE tokenizer trained on the training texts and a small RoBERTa fine-tuned on it."""
    raw = load_task_data(data_args)
    folder = work / "bpe-teacher"
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(raw["train"]["text"], vocab_size=cli.bpe_vocab, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                     model_max_length=cli.max_length)  # fmt: skip
    tokenized = tokenize_task_data(raw, tokenizer, data_args)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=512, max_position_embeddings=cli.max_length + 2, num_labels=5,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
                           id2label=dict(enumerate(raw["train"].features["label"].names)))  # fmt: skip
    model = RobertaForSequenceClassification(config)
    args = StageTrainingArguments(**quiet_args(folder / "run", 0, num_train_epochs=cli.bpe_epochs, learning_rate=1e-3,
                                          per_device_train_batch_size=16, warmup_ratio=0.1, weight_decay=0.01))  # fmt: skip
    start = time.perf_counter()
    Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
    ).train()
    seconds = time.perf_counter() - start
    scores = evaluate_on(model.eval(), tokenized["test"], tokenizer, args, "test")
    print(f"BPE RoBERTa teacher ({len(tokenizer)} tokens, {model.num_parameters():,} parameters): test accuracy "
          f"{scores['test_accuracy']:.4f} after {seconds:.0f} s", flush=True)  # fmt: skip
    return model, tokenizer, {"vocab": len(tokenizer), "parameters": model.num_parameters(),
                              "train_seconds": round(seconds, 1), "test_accuracy": scores["test_accuracy"]}  # fmt: skip


def student(seed: int, layers: int):
    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"), num_labels=5)
    return create_student(base, layers)


def run_seed(
    cli, seed, work, data, tokenizer, teacher, soft_cache, bpe_model, bpe_tokenizer, text_data
) -> dict:
    schedule = dict(num_train_epochs=cli.epochs, learning_rate=cli.learning_rate, per_device_train_batch_size=16,
                    warmup_ratio=0.1, weight_decay=0.01)  # fmt: skip
    distill = dict(temperature=cli.temperature, alpha=cli.alpha)
    collator = DataCollatorWithPadding(tokenizer)
    common = dict(
        eval_dataset=None, processing_class=tokenizer, compute_metrics=compute_classification_metrics
    )
    result, predictions = {}, {}
    for method in METHODS:
        model, folder = student(seed, cli.student_layers), work / f"{method}-{seed}"
        start = time.perf_counter()
        if method == "hard":
            trainer = Trainer(model=model, args=StageTrainingArguments(**quiet_args(folder, seed, **schedule)),
                              train_dataset=data["train"], data_collator=collator, **common)  # fmt: skip
        elif method == "cross":
            cross = TeacherInputsCollator(tokenizer, bpe_tokenizer, max_length=cli.max_length,
                                          teacher_max_length=cli.max_length)  # fmt: skip
            args = DistillationTrainingArguments(**quiet_args(folder, seed, **schedule), **distill)
            trainer = DistillationTrainer(model=model, teacher_model=bpe_model, args=args,
                                          train_dataset=text_data, data_collator=cross, **common)  # fmt: skip
        else:
            cache = dict(teacher_cache=str(soft_cache)) if method == "file" else {}
            args = DistillationTrainingArguments(**quiet_args(folder, seed, **schedule), **distill, **cache)
            trainer = DistillationTrainer(model=model, teacher_model=teacher if method == "live" else None,
                                          args=args, train_dataset=data["train"], data_collator=collator, **common)  # fmt: skip
        trainer.train()
        seconds = time.perf_counter() - start
        output = Trainer(model=model.eval(), args=StageTrainingArguments(**quiet_args(folder, seed)),
                         data_collator=collator).predict(data["test"])  # fmt: skip
        predictions[method] = output.predictions.argmax(-1)
        accuracy = float((predictions[method] == output.label_ids).mean())
        result[method] = {"test_accuracy": accuracy, "train_seconds": round(seconds, 1)}
        print(f"seed {seed} {method:5s}: test accuracy {accuracy:.4f} ({seconds:.0f} s)", flush=True)
    result["file_vs_live_prediction_agreement"] = float((predictions["file"] == predictions["live"]).mean())
    return result


def summarise(report: dict) -> str:
    seeds = report["seeds"]
    lines = [
        f"BBC News test set: {report['test_size']} articles; {len(seeds)} seed(s) {sorted(int(s) for s in seeds)}; "
        f"{report['train_size']} training articles; student = packaged MiniLM cut to "
        f"{report['settings']['student_layers']} layers; MiniLM teacher {report['settings']['teacher_layers']} layers; "
        f"{report['settings']['epochs']} epoch(s), max_length {report['settings']['max_length']}.",
        "",
        "| student taught by | test accuracy (mean ± std) |",
        "|---|---|",
    ]
    labels = {"hard": "labels only (baseline)", "live": "MiniLM teacher, live",
              "file": "MiniLM teacher's probabilities from a JSONL file (no teacher model)",
              "cross": "BPE-tokenizer RoBERTa teacher (another tokenizer), live"}  # fmt: skip
    for method in METHODS:
        values = [seeds[s][method]["test_accuracy"] for s in seeds]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| {labels[method]} | {statistics.mean(values):.4f} ± {std:.4f} |")
    agreement = [seeds[s]["file_vs_live_prediction_agreement"] for s in seeds]
    lines += [
        "",
        f"Teachers: MiniLM (fine-tuned) test accuracy {report['minilm_teacher_test_accuracy']:.4f}; "
        f"BPE RoBERTa ({report['bpe_teacher']['vocab']} tokens, {report['bpe_teacher']['parameters']:,} "
        f"parameters, random init) {report['bpe_teacher']['test_accuracy']:.4f}.",
        f"file vs live students: same test prediction on {statistics.mean(agreement):.2%} of articles (mean over seeds).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher", default=None, help="fine-tuned MiniLM teacher folder (default: fine-tune one)"
    )
    parser.add_argument("--output", default="benchmarks/results")
    parser.add_argument("--work", default=None, help="folder for intermediate files (default: a temp folder)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--teacher_epochs", type=float, default=1.0)
    parser.add_argument("--teacher_learning_rate", type=float, default=1e-4)
    parser.add_argument(
        "--teacher_layers", type=int, default=6, help="MiniLM layers of the teacher (first k)"
    )
    parser.add_argument("--max_train_samples", type=int, default=None, help="first N training articles only")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--student_layers", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--bpe_vocab", type=int, default=8000)
    parser.add_argument("--bpe_epochs", type=float, default=8.0)
    cli = parser.parse_args()
    out, work = Path(cli.output), Path(cli.work or tempfile.mkdtemp(prefix="any-teacher-"))
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    teacher_dir = minilm_teacher(cli, work)
    soft_file = work / "bbc_soft_labels.jsonl"
    export_start = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / "export_soft_labels.py"), "--model", teacher_dir, "--output",
                    str(soft_file), "--max_length", str(cli.max_length)], check=True)  # fmt: skip
    export_seconds = time.perf_counter() - export_start
    data_args = data_arguments(cli)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    raw, data, names = prepare_data(data_args, tokenizer)
    soft = read_soft_labels(soft_file, names)
    splits = ("train", "validation")
    soft_cache = work / "soft-label-cache"
    build_soft_label_cache(soft_cache, soft, {s: data[s] for s in splits}, {s: raw[s]["text"] for s in splits},
                           all_keys=load_bbc_news()["text"], tokenizer=tokenizer,
                           max_length=cli.max_length)  # fmt: skip
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    teacher_scores = evaluate_on(
        teacher, data["test"], tokenizer, StageTrainingArguments(**quiet_args(work / "e", 0)), "test"
    )
    bpe_model, bpe_tokenizer, bpe_report = bpe_teacher(cli, work, data_args)
    text_data = data["train"].add_column("text", raw["train"]["text"])

    report = {
        "test_size": len(data["test"]),
        "train_size": len(data["train"]),
        "minilm_teacher_test_accuracy": teacher_scores["test_accuracy"],
        "bpe_teacher": bpe_report,
        "soft_label_file": {
            "rows": len(soft.keys),
            "fingerprint": soft.fingerprint,
            "export_seconds": round(export_seconds, 1),
        },  # fmt: skip
        "settings": {k: v for k, v in vars(cli).items() if k not in ("output", "work", "teacher")},
        "threads": torch.get_num_threads(),
        "seeds": {},
    }
    for seed in (int(s) for s in cli.seeds.split(",")):
        report["seeds"][str(seed)] = run_seed(cli, seed, work, data, tokenizer, teacher, soft_cache, bpe_model,
                                              bpe_tokenizer, text_data)  # fmt: skip
        report["total_seconds"] = round(time.perf_counter() - started, 1)
        report["load_average"] = [round(v, 2) for v in os.getloadavg()]
        markdown = summarise(report)
        (out / "any_teacher.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "any_teacher.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
