"""Loading a saved model folder with a one-line error that names what is wrong and the fix.

`load_model_folder` is the one way the commands load a model (teacher, student, base model, export input,
benchmark model) or its tokenizer: a missing folder, an incomplete one and a damaged weights file (a
truncated `model.safetensors`: safetensors' own `SafetensorError` names no file) each become an error naming
the folder or file. `open_weights` is `safetensors.safe_open` with the same error, for readers of the headers.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .artifacts import TOKENIZER_FILES, has_tokenizer

__all__ = [
    "DamagedWeightsError",
    "auto_model_class",
    "folder_task",
    "load_model_folder",
    "model_task",
    "open_weights",
    "saved_tokenizer",
]


class DamagedWeightsError(ValueError):
    """A weights file of a model folder does not load: truncated (an interrupted copy, download or save) or
    overwritten."""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else type(error).__name__


def _damaged(file: str | os.PathLike, role: str, error: BaseException) -> DamagedWeightsError:
    return DamagedWeightsError(
        f"The {role} weights {file} do not load ({_first_line(error)}): the file is truncated or damaged. "
        "Re-save the model there (model.save_pretrained), or download / copy it again."
    )


def open_weights(file: str | os.PathLike, role: str = "model"):
    """`safe_open(file)` (a context manager for the tensors); a damaged file is a `DamagedWeightsError`."""
    try:
        return safe_open(str(file), framework="pt")
    except SafetensorError as error:
        raise _damaged(file, role, error) from error


def _damaged_file(folder: Path) -> tuple[Path, BaseException] | None:
    """The first `*.safetensors` file in `folder` that does not open (headers and size are checked)."""
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            return file, error
    return None


def load_model_folder(loader, path: str | os.PathLike, role: str, **kwargs):
    """`loader.from_pretrained(path, **kwargs)` (a model or tokenizer class) with a one-line error for a
    missing or incomplete model folder and for a damaged weights file (the file is named)."""
    path = str(path)
    if not Path(path).exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise FileNotFoundError(f"The {role} folder {path} does not exist; pass the folder of a saved model.")
    try:
        return loader.from_pretrained(path, **kwargs)
    except SafetensorError as error:
        file, cause = _damaged_file(Path(path)) or (Path(path), error)
        raise _damaged(file, role, cause) from error
    except OSError as error:
        where = "no such folder" if not Path(path).exists() else "not a complete model folder"
        raise FileNotFoundError(
            f"Cannot load the {role} from {path!r}: {where} ({str(error).splitlines()[0][:120]}). Pass the "
            "folder written by `distilnlp finetune` / `distill` (config.json, weights and tokenizer files)."
        ) from error


def saved_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved in `folder`; OSError when it holds none of `TOKENIZER_FILES` (transformers 5 would
    otherwise build an empty one, special tokens only, from a bare config.json and encode every text as [UNK])."""
    from transformers import AutoTokenizer

    if not has_tokenizer(folder):
        raise OSError(f"none of {', '.join(TOKENIZER_FILES)}")
    return AutoTokenizer.from_pretrained(folder)


def model_task(architectures: list[str]) -> str | None:
    """'sequence-classification' or 'token-classification' from a config's `architectures` (or a model class
    name); None for any other head."""
    for arch in architectures:
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch.endswith("ForTokenClassification"):
            return "token-classification"
    return None


def auto_model_class(task: str | None):
    """The transformers auto class of a task ('token-classification': AutoModelForTokenClassification; else
    AutoModelForSequenceClassification)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return (
        AutoModelForTokenClassification
        if task == "token-classification"
        else AutoModelForSequenceClassification
    )


def folder_task(folder: str | os.PathLike) -> str | None:
    """`model_task` of a saved model folder's config.json (None when unreadable or another head)."""
    import json

    try:
        architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return model_task(architectures)
