"""The names of the files distilnlp writes, and the library versions it records beside them: one definition
each, so readers (the demo, the benchmark) and writers agree."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# distilnlp finetune / distill
FINETUNE_RESULTS_FILE = "finetune_results.json"
DISTILL_RESULTS_FILE = "distill_results.json"
GENERAL_RESULTS_FILE = "general_results.json"  # distilnlp distill-general
PROJECTIONS_FILE = "distillation_projections.safetensors"
RUN_SETTINGS_FILE = "distilnlp_run_settings.json"  # distillation settings + length of the run in output_dir
RUN_LOCK_FILE = "_distilnlp.lock"  # "_" prefix: Trainer.push_to_hub never uploads it
# distilnlp export (a model folder that distilnlp.onnx.OnnxClassifier and Optimum's ORTModelFor* load)
ONNX_FILE = "model.onnx"
OPTIMIZED_FILE = "model_optimized.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
EXPORT_SUMMARY_FILE = "distilnlp_export.json"
ORT_CONFIG_FILE = "ort_config.json"  # written by the earlier Optimum exports; removed on re-export
EXPORT_STAGING_PREFIX = ".distilnlp-export-"  # temporary sibling folder an export is built in
# vocabulary trimming (distilnlp.onnx.vocabulary): what was kept, beside the trimmed model
VOCABULARY_TRIM_FILE = "distilnlp_vocabulary.json"
# teacher cache
TEACHER_CACHE_METADATA_FILE = "distilnlp_teacher_cache.json"
# the column of cached teacher logits, in the cache and in the batches built from it (`counts` reads it)
TEACHER_LOGITS_COLUMN = "teacher_logits"
# `distill --soft_labels`: the file turned into a teacher cache, inside output_dir
SOFT_LABEL_CACHE_DIR = "soft-label-cache"
# distilnlp benchmark
BENCHMARK_JSON_FILE = "benchmark.json"
BENCHMARK_MARKDOWN_FILE = "benchmark.md"
BENCHMARK_PLOT_FILE = "benchmark.png"

# How a missing teacher cache can be built (distill's `--teacher_cache_backend`, teacher_cache.compute_teacher_logits).
TEACHER_CACHE_BACKENDS = ("torch", "onnx", "onnx-int8")

CORE_PACKAGES = ("torch", "transformers", "datasets", "accelerate")
ONNX_PACKAGES = ("onnx", "onnxruntime")


def package_versions(*names: str) -> dict[str, str]:
    """{distribution name: installed version} ("not installed" where absent), read without importing."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# A saved tokenizer has one of these. Checked first: transformers 5 builds an empty tokenizer (special tokens
# only) from a folder with a config.json and none of them, which would score a model on [UNK]s.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a saved tokenizer (see TOKENIZER_FILES)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)
