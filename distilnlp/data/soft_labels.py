"""Soft labels brought from outside: class probabilities or logits written by another tool (an LLM asked to
label text, a hosted API, a model in another framework), read, validated and matched to the task's rows.

File (`.jsonl` / `.json` / `.csv` / `.parquet`), one row per example:

- a key: `text` (the example's text, matched exactly, leading/trailing whitespace ignored) or `id` (matched
  to an `id` column of the task data);
- either `probabilities` or `logits`, as a mapping class name -> value (JSON object, Parquet struct), a list
  of values in the task's label order (or in the order of the row's own `label_names` list, as the
  zero-shot pipeline writes them), or one column per class named `probabilities.<class>` / `logits.<class>`
  (CSV; what `pandas.json_normalize` makes of the mapping). A CSV cell may also hold a JSON list or object.

Class names must be the task's label names; `label_map` renames the file's names first (e.g. {"sports":
"sport"}). Probabilities are the teacher's distribution at T = 1: they are stored as log-probabilities, which
*are* logits of that distribution (softmax is unchanged by adding a constant), so the training temperature
softens them exactly as it would the teacher's own logits. `temperature` (default 1) divides the logits
(or log-probabilities) once more when they are read: < 1 sharpens, > 1 softens. Any bad row raises
`SoftLabelError`, one line naming the file, the row (1-based, header not counted) and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("probabilities", "logits")
KEYS = ("text", "id")
# Logit of a class with probability 0: probability exactly 0 after softmax, yet finite (0 * log 0 terms stay 0).
ZERO_PROBABILITY_LOGIT = -1e9


class SoftLabelError(ValueError):
    """A soft-label file cannot be used; the message names the row and what to fix."""


@dataclass
class SoftLabels:
    """Validated soft labels, one entry per distinct key.

    keys: texts (stripped) or ids (as strings); logits: (N, C) float32 in the task's label order, already
    divided by `temperature`; rows: the 1-based file row each key came from (for messages).
    """

    path: str
    key: str
    kind: str
    keys: list[str]
    logits: np.ndarray
    label_names: list[str]
    temperature: float
    rows: list[int]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the content (keys, values, class names, temperature), not of the file's bytes or path."""
        digest = hashlib.sha256()
        header = [self.key, self.kind, self.label_names, self.temperature, len(self.keys)]
        digest.update(json.dumps(header).encode())
        for key in self.keys:
            digest.update(key.encode() + b"\0")
        digest.update(np.ascontiguousarray(self.logits, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def align(self, keys: list) -> tuple[np.ndarray, np.ndarray]:
        """(logits (len(keys), C) with NaN rows where no soft label matches, bool (N,) of entries used)."""
        index = {k: i for i, k in enumerate(self.keys)}
        out = np.full((len(keys), self.logits.shape[1]), np.nan, dtype=np.float32)
        used = np.zeros(len(self.keys), dtype=bool)
        for row, key in enumerate(keys):
            i = index.get(_normalise_key(key, self.key))
            if i is not None:
                out[row] = self.logits[i]
                used[i] = True
        return out, used

    def check_all_matched(self, keys: list, where: str = "the task data", fix: str = "") -> None:
        """Raise `SoftLabelError` naming the first file row whose key is not among `keys` (all the task's rows).

        `where` names what `keys` came from; `fix` (when given) replaces the default advice."""
        known = {_normalise_key(k, self.key) for k in keys}
        missing = [i for i, k in enumerate(self.keys) if k not in known]
        if missing:
            first = missing[0]
            shown = self.keys[first][:60].replace("\n", " ")
            fix = fix or (
                f"label the task's own {'texts exactly' if self.key == 'text' else 'ids'}, or drop those rows"
            )
            raise SoftLabelError(
                f"{self.path}: row {self.rows[first]} matches no {self.key} of {where} ({self.key} "
                f"{shown!r}; {len(missing)} of {len(self.keys)} rows match none): {fix}."
            )


def _normalise_key(value, key: str) -> str:
    return value.strip() if key == "text" and isinstance(value, str) else str(value)


# --------------------------------------------------------------------------------------------------- reading


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        text = path.read_text()
        stripped = text.lstrip()
        if suffix == ".json" and stripped.startswith("["):
            rows = json.loads(text)
        else:
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as error:
                        raise SoftLabelError(
                            f"{path}: row {len(rows) + 1} (line {number}) is not JSON: {error}."
                        ) from None
        if not all(isinstance(r, dict) for r in rows):
            raise SoftLabelError(
                f"{path}: every row must be a JSON object with a key and probabilities/logits."
            )
        return rows
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        return frame.to_dict("records")
    raise SoftLabelError(
        f"{path}: unsupported soft-label file type {suffix!r}; use .jsonl, .json, .csv or .parquet."
    )


def _parse_cell(value):
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if hasattr(value, "tolist"):  # numpy arrays from Parquet list columns
        return value.tolist()
    return value


def _row_values(row: dict, kind: str, number: int, path: Path) -> tuple[list, list | None]:
    """(values, class names or None for the task's order) of one row."""
    wide = {c[len(kind) + 1 :]: row[c] for c in row if isinstance(c, str) and c.startswith(kind + ".")}
    if wide:
        return list(wide.values()), list(wide.keys())
    value = _parse_cell(row.get(kind))
    if isinstance(value, dict):
        return list(value.values()), [str(k) for k in value]
    if isinstance(value, (list, tuple)):
        names = _parse_cell(row.get("label_names"))
        if names is not None and not isinstance(names, (list, tuple)):
            raise SoftLabelError(f"{path}: row {number}: label_names must be a list of class names.")
        return list(value), None if names is None else [str(n) for n in names]
    raise SoftLabelError(
        f"{path}: row {number}: {kind} must be a mapping class -> value or a list of values, got "
        f"{type(value).__name__}."
    )


def _to_logits(values: list, kind: str, number: int, path: Path, names: list[str], tolerance: float):
    numbers = []
    for name, value in zip(names, values, strict=True):
        try:
            number_value = float(value)
        except (TypeError, ValueError):
            raise SoftLabelError(
                f"{path}: row {number}: {kind[:-1] if kind == 'logits' else 'probability'} "
                f"of class {name!r} is {value!r}, not a number."
            ) from None
        if not math.isfinite(number_value):
            raise SoftLabelError(
                f"{path}: row {number}: the {kind} value of class {name!r} is {number_value} (not finite); "
                "give a finite number for every class."
            )
        numbers.append(number_value)
    values_array = np.asarray(numbers, dtype=np.float64)
    if kind == "logits":
        return values_array
    bad = next((n for n, p in zip(names, numbers, strict=True) if not 0.0 <= p <= 1.0), None)
    if bad is not None:
        raise SoftLabelError(f"{path}: row {number}: the probability of class {bad!r} is outside [0, 1].")
    total = values_array.sum()
    if abs(total - 1.0) > tolerance:
        raise SoftLabelError(
            f"{path}: row {number}: probabilities sum to {total:.6g}, not 1 (tolerance {tolerance:g}); give "
            "normalised probabilities, or logits under a `logits` column."
        )
    with np.errstate(divide="ignore"):
        return np.where(values_array > 0, np.log(np.maximum(values_array, 1e-300)), ZERO_PROBABILITY_LOGIT)


def _key_and_kind(path: Path, rows: list[dict], key: str | None) -> tuple[str, str]:
    """(the key column, "probabilities" or "logits") of a file's rows; `key` None: `text` if present, else `id`."""
    columns = {c for r in rows for c in r}
    key = key or next((k for k in KEYS if k in columns), None)
    if key not in KEYS or key not in columns:
        raise SoftLabelError(
            f"{path}: no {' or '.join(repr(k) for k in KEYS)} column to match rows to the task's examples "
            f"(columns: {sorted(map(str, columns))})."
        )
    kinds = [k for k in KINDS if k in columns or any(str(c).startswith(k + ".") for c in columns)]
    if len(kinds) != 1:
        raise SoftLabelError(
            f"{path}: give exactly one of 'probabilities' or 'logits' per row (found {kinds or 'neither'})."
        )
    return key, kinds[0]


def _row_logits(
    row: dict,
    number: int,
    kind: str,
    path: Path,
    label_names: list[str],
    label_map: dict[str, str],
    tolerance: float,
) -> np.ndarray:
    """One row's values as float64 logits in the task's label order (class names checked and renamed)."""
    num_classes = len(label_names)
    raw, names = _row_values(row, kind, number, path)
    if len(raw) != num_classes:
        raise SoftLabelError(
            f"{path}: row {number} has {len(raw)} {kind} but the task has {num_classes} classes "
            f"({', '.join(label_names)})."
        )
    if names is None:
        names = list(label_names)
    names = [label_map.get(n, n) for n in names]
    position = {name: i for i, name in enumerate(label_names)}
    unknown = next((n for n in names if n not in position), None)
    if unknown is not None:
        raise SoftLabelError(
            f"{path}: row {number} names class {unknown!r}, which is not a task label "
            f"({', '.join(label_names)}); rename it with soft_labels_label_map, e.g. "
            f'{{"{unknown}": "{label_names[0]}"}}.'
        )
    if len(set(names)) != num_classes:
        repeated = next(n for n in names if names.count(n) > 1)
        raise SoftLabelError(f"{path}: row {number} gives class {repeated!r} twice.")
    logits = _to_logits(raw, kind, number, path, names, tolerance)
    ordered = np.empty(num_classes, dtype=np.float64)
    ordered[[position[n] for n in names]] = logits
    return ordered


def _scaled_float32(values: list[np.ndarray], numbers: list[int], kind: str, temperature: float, path: Path):
    """(N, C) float32 logits divided by `temperature`; an error naming the first row that overflows float32."""
    with np.errstate(over="ignore"):  # caught just below, with the row
        logits = (np.stack(values) / temperature).astype(np.float32)
    overflow = np.flatnonzero(~np.isfinite(logits).all(-1))
    if overflow.size:  # finite as float64, but past float32's range (about 3.4e38) once stored
        raise SoftLabelError(
            f"{path}: row {numbers[overflow[0]]}: a {kind} value is too large for float32 (it becomes "
            f"infinite{' after dividing by soft_labels_temperature' if temperature != 1 else ''}); give values "
            "within +-3e38."
        )
    return logits


def read_soft_labels(
    path: str | Path,
    label_names: list[str],
    *,
    label_map: dict[str, str] | None = None,
    temperature: float = 1.0,
    tolerance: float = 1e-3,
    key: str | None = None,
) -> SoftLabels:
    """Read and validate a soft-label file for a task whose classes are `label_names` (in id order).

    `key`: "text" or "id"; by default `text` when the file has that column, else `id`.
    Rows repeating a key must agree (within 1e-6 after conversion); one is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise SoftLabelError(f"Soft-label file {path} does not exist.")
    if not temperature > 0:
        raise SoftLabelError(f"soft_labels_temperature must be > 0, got {temperature}.")
    rows = _read_rows(path)
    if not rows:
        raise SoftLabelError(
            f"{path} has no rows; write one row per example with a key and probabilities/logits."
        )
    key, kind = _key_and_kind(path, rows, key)
    label_map = label_map or {}

    keys: list[str] = []
    values: list[np.ndarray] = []
    numbers: list[int] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        key_value = row.get(key)
        if key_value is None or (isinstance(key_value, float) and math.isnan(key_value)):
            raise SoftLabelError(f"{path}: row {number} has no {key!r}.")
        ordered = _row_logits(row, number, kind, path, label_names, label_map, tolerance)
        normalised = _normalise_key(key_value, key)
        if normalised in seen:
            if not np.allclose(values[seen[normalised]], ordered, atol=1e-6, rtol=0):
                raise SoftLabelError(
                    f"{path}: row {number} repeats the {key} of row {numbers[seen[normalised]]} with other "
                    f"{kind}; keep one row per {key}."
                )
            continue
        seen[normalised] = len(keys)
        keys.append(normalised)
        values.append(ordered)
        numbers.append(number)
    logits = _scaled_float32(values, numbers, kind, temperature, path)
    return SoftLabels(str(path), key, kind, keys, logits, list(label_names), float(temperature), numbers)
