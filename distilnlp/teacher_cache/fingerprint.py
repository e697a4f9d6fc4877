"""Content fingerprints (SHA-256 hex digests) of a teacher's weights, a tokenizer and tokenized data.

They key the teacher-logit cache: a cache is reused only when all of them match what it was built from.
Each hashes content, never paths or object ids, so the same teacher loaded twice gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The columns hashed: labels are left out on purpose, they do not change the teacher's logits, so one cache
# serves every labelled / unlabelled split of the same examples.
from ..data.task import MODEL_INPUT_COLUMNS


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    # Reinterpret as bytes so that every dtype (bf16 included, which numpy lacks) hashes the same way.
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _hash_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in items:
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def weights_fingerprint(teacher: PreTrainedModel | str | os.PathLike) -> str:
    """Digest of a model's state dict (names, dtypes, shapes, values), from the model or its folder.

    A folder is read from its `*.safetensors` files without building the model; it gives the same digest as
    the model loaded from it (models with tied weights, which `save_pretrained` de-duplicates, excepted).
    """
    if isinstance(teacher, torch.nn.Module):
        state = teacher.state_dict()
        return _hash_tensors((name, state[name]) for name in sorted(state))
    from ..runs.model_files import open_weights

    files = sorted(Path(teacher).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"No *.safetensors weights in {teacher}; save the teacher with save_pretrained() (safetensors is "
            "the default) or pass the loaded model instead of its folder."
        )
    handles = [open_weights(f, "teacher") for f in files]
    names = sorted((name, index) for index, h in enumerate(handles) for name in h.keys())  # noqa: SIM118
    return _hash_tensors((name, handles[index].get_tensor(name)) for name, index in names)


def teachers_fingerprint(teachers) -> str:
    """`weights_fingerprint` of one teacher (or a list of one); for several, one digest of theirs in order."""
    if isinstance(teachers, (list, tuple)):
        if len(teachers) == 1:
            return weights_fingerprint(teachers[0])
        return combine({"teachers": [weights_fingerprint(t) for t in teachers]})
    return weights_fingerprint(teachers)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Digest of what decides a tokenizer's output: vocabulary, normalisation, special tokens, sides."""
    state: dict = {
        "class": type(tokenizer).__name__,
        "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "model_input_names": list(tokenizer.model_input_names),
    }
    if getattr(tokenizer, "is_fast", False):
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        # Truncation / padding hold the settings of the last call, not properties of the tokenizer.
        backend.pop("truncation", None)
        backend.pop("padding", None)
        state["backend"] = backend
    else:
        state["vocab"] = sorted(tokenizer.get_vocab().items())
        state["init"] = {
            k: str(v)
            for k, v in sorted(tokenizer.init_kwargs.items())
            if not k.endswith("_file") and k != "name_or_path"
        }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def tokenizers_differ(teacher_tokenizer, student_tokenizer) -> bool:
    """Whether the two tokenizers can give different ids for the same text (content fingerprints differ)."""
    return tokenizer_fingerprint(teacher_tokenizer) != tokenizer_fingerprint(student_tokenizer)


def inputs_fingerprint(dataset: Dataset, batch_size: int = 10_000) -> str:
    """Digest of the model-input columns of a tokenized dataset, row order included.

    Integer values are hashed as int64 so that the storage type (int8 masks, int32 ids) does not matter.
    """
    columns = [c for c in MODEL_INPUT_COLUMNS if c in dataset.column_names]
    if "input_ids" not in columns:
        raise ValueError(
            f"The dataset has no input_ids column (columns: {dataset.column_names}); tokenize it first."
        )
    digests = {c: hashlib.sha256() for c in columns}
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        for column in columns:
            array = batch.column(column).combine_chunks()
            lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
            values = array.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            digests[column].update(lengths.tobytes())
            digests[column].update(values.tobytes())
    combined = {c: d.hexdigest() for c, d in digests.items()} | {"rows": len(dataset)}
    return hashlib.sha256(json.dumps(combined, sort_keys=True).encode()).hexdigest()


def combine(parts: dict) -> str:
    """One digest of a JSON-serialisable mapping of component digests."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
