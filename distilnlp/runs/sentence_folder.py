"""Sentence-embedding models on disk: a sentence-transformers folder, or any encoder with a pooling choice.

    model = load_sentence_model("all-MiniLM-L6-v2/")                        # its modules.json: mean + normalize
    model = load_sentence_model("my-bert/", pooling="cls", normalize=True)  # a plain encoder folder

Both give a `sentence_transformers.SentenceTransformer` built from sentence-transformers' own modules
(`Transformer`, `Pooling`, optional `Dense`, optional `Normalize`), so pooling and normalization are exactly
the library's, and `model.save(folder)` writes a folder `SentenceTransformer(folder)` loads. Attention is eager:
the ONNX export's graph is then the one ONNX Runtime fuses (see `distilnlp.onnx.torch_export`).
"""

from __future__ import annotations

import os
from pathlib import Path

SENTENCE_MODULES_FILE = "modules.json"
POOLING_MODES = ("mean", "cls", "max")


def is_sentence_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a saved sentence-transformers model (it has a modules.json)."""
    return (Path(path) / SENTENCE_MODULES_FILE).is_file()


def _check_folder(path: str | os.PathLike, role: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The {role} folder {folder} does not exist; pass the folder of a saved model."
        )
    if not (folder / "config.json").is_file() and not is_sentence_folder(folder):
        raise FileNotFoundError(
            f"The {role} folder {folder} has neither a modules.json (sentence-transformers) nor a config.json "
            "(transformers): it is not a saved model."
        )
    return folder


def load_sentence_model(
    path: str | os.PathLike,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_length: int | None = None,
    role: str = "teacher",
):
    """The `SentenceTransformer` of `path` on CPU, eager attention, offline.

    A sentence-transformers folder keeps its own pooling / normalization (`pooling` / `normalize`, when given,
    must agree with them: a conflict is an error naming both). Any other encoder folder gets
    `pooling` (default "mean") and `normalize` (default False) as sentence-transformers modules.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = _check_folder(path, role)
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {pooling!r}.")
    eager = {"attn_implementation": "eager"}
    if is_sentence_folder(folder):
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True, model_kwargs=eager)
        found = describe_pooling(model)
        if pooling is not None and pooling != found["pooling"]:
            raise ValueError(
                f"--pooling {pooling} conflicts with the {role} folder {folder}'s own pooling "
                f"{found['pooling']!r} (its modules.json); drop --pooling."
            )
        if normalize is not None and normalize != found["normalize"]:
            raise ValueError(
                f"--normalize {normalize} conflicts with the {role} folder {folder} (normalize="
                f"{found['normalize']}); drop --normalize."
            )
    else:
        transformer = Transformer(str(folder), model_kwargs=eager, max_seq_length=max_seq_length)
        modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling or "mean")]
        if normalize:
            modules.append(Normalize())
        model = SentenceTransformer(modules=modules, device="cpu")
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def describe_pooling(model) -> dict:
    """{"pooling": "mean" | "cls" | ..., "normalize": bool, "dense": bool, "dimension": int} of a
    `SentenceTransformer`, read from its modules."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    poolings = [m for m in model if isinstance(m, Pooling)]
    if len(poolings) != 1:
        raise ValueError(f"A sentence model with one Pooling module is needed; this one has {len(poolings)}.")
    mode = poolings[0].get_config_dict()["pooling_mode"]
    return {
        "pooling": mode if isinstance(mode, str) else "+".join(mode),
        "normalize": any(isinstance(m, Normalize) for m in model),
        "dense": any(isinstance(m, Dense) for m in model),
        "dimension": model.get_embedding_dimension(),
        "max_seq_length": model.max_seq_length,
    }


def encoder_of(model):
    """The transformers encoder (e.g. `BertModel`) inside a `SentenceTransformer`'s first module."""
    return model[0].auto_model
