"""Exports that never destroy: build in a temporary sibling folder, check parity there, swap it into place.

`export_model` here wraps `export.export_model` (the writer): the inputs are checked first (model folder,
sequence length within the model's limits, the target folder), the whole export - every graph and its
parity check - is written into `.distilnlp-export-<name>-<pid>` next to the target, and only then replaces the
target in one rename. A failure (a parity check, a crash, a full disk) removes the temporary folder and
leaves the target exactly as it was.
"""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
import json
import logging
import os
import shutil
from pathlib import Path

from transformers import AutoConfig

from ..artifacts import EXPORT_STAGING_PREFIX, EXPORT_SUMMARY_FILE
from .export import ExportResult
from .export import export_model as _write_export

logger = logging.getLogger(__name__)

# Models whose position ids start after the padding index (RoBERTa family): usable length is smaller.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")
# Tokenizers without a limit report model_max_length = int(1e30).
_NO_LIMIT = 10**9


def check_model_folder(model_dir: str | os.PathLike, role: str = "model") -> Path:
    """`model_dir` as a Path, or FileNotFoundError saying what is missing (not "could not connect to the Hub")."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The {role} folder {folder} does not exist; pass the folder of a saved model."
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"The {role} folder {folder} has no config.json: it is not a saved model (save it with "
            "model.save_pretrained(folder), or pass the output folder of `distilnlp finetune` / `distill`)."
        )
    return folder


def sequence_limit(config, tokenizer=None) -> int | None:
    """The longest input the model (position embeddings) and its tokenizer accept, or None if unknown."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = (config.pad_token_id or 0) + 1 if config.model_type in _OFFSET_POSITIONS else 0
        limits.append(positions - offset)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _NO_LIMIT:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None


def clamp_sequence_length(length: int, config, tokenizer=None, what: str = "max_length") -> int:
    """`length`, or the model's limit when smaller (with a note): longer inputs fail inside ONNX Runtime."""
    limit = sequence_limit(config, tokenizer)
    if limit is not None and length > limit:
        logger.warning(
            "%s=%d exceeds what the model accepts (%d positions); using %d.", what, length, limit, limit
        )
        return limit
    return length


def is_export(folder: Path) -> bool:
    return (folder / EXPORT_SUMMARY_FILE).is_file()


def check_target(output_dir: Path, model_dir: Path, overwrite: bool) -> None:
    """Refuse targets whose contents an export would destroy without being asked to."""
    target, model = output_dir.resolve(), model_dir.resolve()
    if target == model or model.is_relative_to(target):
        raise ValueError(
            f"The export output {output_dir} would replace the model folder {model_dir}; choose another --output."
        )
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"The export output {output_dir} is a file; choose a folder for --output.")
    if target.is_dir() and any(target.iterdir()) and not is_export(target) and not overwrite:
        raise FileExistsError(
            f"{output_dir} is not empty and holds no distilnlp export ({EXPORT_SUMMARY_FILE}); choose a new or "
            "empty folder for --output, or pass --overwrite true to replace its contents."
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_folder(staging: Path, target: Path) -> None:
    """Put `staging` where `target` is: one rename (an atomic swap when the target exists)."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):  # staging now holds the old export
        shutil.rmtree(staging)
        return
    old = staging.with_name(staging.name + "-old")  # no atomic swap here: two renames, old kept until done
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old)


def export_model(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_length: int = 128,
    **kwargs,
) -> ExportResult:
    """`distilnlp.onnx.export.export_model` (same arguments), built aside and swapped into `output_dir`.

    `overwrite=True` allows replacing a non-empty folder that is not a previous distilnlp export (its files
    are deleted). `max_length` is clamped to the model's and tokenizer's limits.
    """
    from .parity import _load_tokenizer

    model_dir, target = check_model_folder(model_dir), Path(output_dir)
    check_target(target, model_dir, overwrite)
    max_length = clamp_sequence_length(
        max_length, AutoConfig.from_pretrained(model_dir), _load_tokenizer(model_dir)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"{EXPORT_STAGING_PREFIX}{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = _write_export(model_dir, staging, max_length=max_length, **kwargs)
        summary = json.loads((staging / EXPORT_SUMMARY_FILE).read_text())
        summary["arguments"]["output_dir"] = str(target)  # the path it is read from, not the temporary one
        (staging / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left after a failure: the target is untouched

    def moved(path: Path | None) -> Path | None:
        return None if path is None else target / path.name

    return dataclasses.replace(
        result,
        output_dir=target,
        onnx_path=moved(result.onnx_path),
        optimized_path=moved(result.optimized_path),
        quantized_path=moved(result.quantized_path),
        summary_path=moved(result.summary_path),
    )


# Same parameters as the writer (plus `overwrite`), for `inspect.signature` and help tools.
_writer = inspect.signature(_write_export)
export_model.__signature__ = _writer.replace(
    parameters=[
        *_writer.parameters.values(),
        inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
    ]
)
