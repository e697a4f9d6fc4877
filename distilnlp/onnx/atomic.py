"""Exports that never destroy: build in a temporary sibling folder, check parity there, then move the files in.

`export_model` here wraps `export.write_export` (the writer): the inputs are checked first (model folder,
sequence length within the model's limits, the target folder), the whole export - every graph and its
parity check - is written into `.distilnlp-export-<name>-<pid>` next to the target, and only then moved into the
target: a new target in one rename; an existing one file by file, replacing only the files the previous export
wrote (recorded in its `distilnlp_export.json` under `written_files`) and keeping everything else. A failure
(a parity check, a crash, a full disk) removes the temporary folder and leaves the target exactly as it was;
the staging folders of a killed export are removed by the next export into the same target.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from fnmatch import fnmatch
from pathlib import Path

from transformers import AutoConfig

from ..runs.artifacts import (
    EXPORT_STAGING_PREFIX,
    EXPORT_SUMMARY_FILE,
    ORT_CONFIG_FILE,
    VOCABULARY_TRIM_FILE,
)
from .arguments import ExportArguments, ExportTexts
from .export import ExportResult, write_export

logger = logging.getLogger(__name__)

# Models whose position ids start after the padding index (RoBERTa family): usable length is smaller.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")
# Tokenizers without a limit report model_max_length = int(1e30).
_NO_LIMIT = 10**9
# What an export written before `written_files` was recorded may hold (distilnlp's, or the Optimum exports'
# before it): the graphs, config, tokenizer files and reports. Only these are replaced in such a folder.
_KNOWN_ARTIFACTS = (
    "model*.onnx",
    "config.json",
    EXPORT_SUMMARY_FILE,
    ORT_CONFIG_FILE,
    VOCABULARY_TRIM_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spm.model",
    "chat_template.jinja",
)


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
            "empty folder for --output, or pass --overwrite true to export into it (files of the same names are "
            "replaced, the others kept)."
        )


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user counts: it may still be writing)."""
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> None:
    """Remove the staging folders of earlier exports into `target` whose process is gone (killed mid-export)."""
    pattern = re.compile(re.escape(f"{EXPORT_STAGING_PREFIX}{target.name}-") + r"(\d+)(-old)?")
    if not target.parent.is_dir():
        return
    for path in target.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not _alive(int(match[1])):
            logger.warning("Removing %s, left by an export that did not finish (process %s).", path, match[1])
            shutil.rmtree(path, ignore_errors=True)


def previous_export_files(target: Path) -> set[str]:
    """Names of the files in `target` that an earlier distilnlp export wrote, so a new export may replace them.

    Its summary's `written_files`; a summary without that list (an older export) means the names exports use
    (`_KNOWN_ARTIFACTS`); no summary (a folder passed with --overwrite) means none.
    """
    present = {p.name for p in target.iterdir() if p.is_file() or p.is_symlink()}
    try:
        summary = json.loads((target / EXPORT_SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return set()
    recorded = summary.get("written_files") if isinstance(summary, dict) else None
    if isinstance(recorded, list):
        return present & {name for name in recorded if isinstance(name, str)}  # plain names: nothing outside
    return {name for name in present if any(fnmatch(name, p) for p in _KNOWN_ARTIFACTS)}


def move_in(staging: Path, target: Path) -> None:
    """Put the checked export in `staging` into `target`: one rename for a new target; else the previous
    export's files are moved aside, the new ones moved in (the summary last) and the old ones deleted. Files
    of the target that no export wrote stay; a failure while moving puts everything back."""
    if not target.exists():
        os.rename(staging, target)
        return
    new = sorted(p.name for p in staging.iterdir())
    old = previous_export_files(target)
    foreign = sorted(n for n in new if n not in old and (target / n).exists())
    if foreign:
        logger.warning("Replacing %s in %s, which no distilnlp export wrote.", ", ".join(foreign), target)
    # The old summary is replaced in place (os.replace), so the folder reads as an export throughout.
    aside = sorted((old | set(foreign)) - {EXPORT_SUMMARY_FILE})
    old_dir = staging.with_name(staging.name + "-old")
    old_dir.mkdir(exist_ok=True)
    moved_out, moved_in = [], []
    try:
        for name in aside:
            os.replace(target / name, old_dir / name)
            moved_out.append(name)
        for name in sorted(new, key=lambda n: n == EXPORT_SUMMARY_FILE):
            os.replace(staging / name, target / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(target / name, staging / name)
        for name in moved_out:
            os.replace(old_dir / name, target / name)
        old_dir.rmdir()  # empty now; left with the old files only if putting them back failed
        raise
    shutil.rmtree(old_dir)


def export_model(
    args: ExportArguments, texts: ExportTexts | None = None, *, overwrite: bool = False
) -> ExportResult:
    """Export `args.model_dir` to `args.output_dir` (`export.write_export`), built aside and moved in.

    `texts` are the task's parity / calibration / vocabulary texts (none: synthetic token ids); its `max_length` is
    clamped to the model's and tokenizer's limits. `overwrite=True` allows exporting into a non-empty folder that
    is not a previous distilnlp export (files of the export's names are replaced, the others kept).

    Raises:
        ParityError: a graph does not reproduce its reference within the thresholds.
    """
    from .parity import _load_tokenizer

    texts = texts or ExportTexts()
    model_dir, target = check_model_folder(args.model_dir), Path(args.output_dir)
    check_target(target, model_dir, overwrite)
    max_length = clamp_sequence_length(
        texts.max_length, AutoConfig.from_pretrained(model_dir), _load_tokenizer(model_dir)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f"{EXPORT_STAGING_PREFIX}{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = write_export(args, dataclasses.replace(texts, max_length=max_length), staging)
        summary = json.loads((staging / EXPORT_SUMMARY_FILE).read_text())
        # Everything in the (fresh) staging folder: what the next export may replace, and nothing else.
        summary["written_files"] = sorted(p.name for p in staging.iterdir())
        (staging / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        move_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left after a failure: the target is untouched

    def moved(path: Path | None) -> Path | None:
        return None if path is None else target / path.name

    if result.int8_choice is not None:
        result.int8_choice.path = moved(result.int8_choice.path)
    return dataclasses.replace(
        result,
        output_dir=target,
        onnx_path=moved(result.onnx_path),
        optimized_path=moved(result.optimized_path),
        quantized_path=moved(result.quantized_path),
        summary_path=moved(result.summary_path),
    )
