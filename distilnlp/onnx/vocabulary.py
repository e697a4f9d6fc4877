"""Vocabulary trimming: keep only the word pieces a task's texts use, in the tokenizer and the embedding matrix.

    report = trim_vocabulary("runs/student", "runs/student-trimmed", texts, max_length=128)

A BERT-class student spends most of its parameters on the word embeddings (30,522 x 384 of the 1-layer MiniLM
student's 13.8 M), and a task uses a few thousand of those rows. Trimming keeps the rows of:

- every token id the task's texts produce (tokenized as the model sees them: truncated at `max_length`);
- the special tokens ([PAD], [UNK], [CLS], [SEP], [MASK] and any added token);
- with `keep_quantization_ranges` (default), the rows holding each embedding column's minimum and maximum: int8
  quantization takes its scales from those extremes (per tensor or per column), so with them kept the trimmed
  int8 graph quantizes every kept row exactly as the untrimmed one does, and predicts the same.

Kept tokens keep their relative order; the new id of a token is its rank among the kept ids. The WordPiece vocab
(`tokenizer.json`, `vocab.txt`, the added-token ids in `tokenizer_config.json`) and the embedding matrix are
rewritten together, `config.vocab_size` / `pad_token_id` follow, and the result is checked: every text tokenizes to
the remapped ids of the original tokenization, and the trimmed model's logits equal the original's exactly.

Texts outside the task: WordPiece is greedy longest-match-first, so a word whose original pieces are all kept
splits exactly as before (each piece is still the longest kept match). A word with a dropped piece splits into
other kept pieces, or becomes [UNK] when none matches; the trimmed model is meant for its task's texts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging

from ..runs.artifacts import VOCABULARY_TRIM_FILE
from ..runs.model_files import load_model_folder

logger = logging.get_logger(__name__)

_BATCH = 256  # texts per tokenizer call when collecting ids


@dataclass
class VocabularyTrim:
    """What `trim_vocabulary` kept: sizes before and after, and the kept original ids (new id = index)."""

    vocab_size_before: int
    vocab_size_after: int
    used_tokens: int  # ids the texts produce, special tokens included
    range_rows: int  # extra rows kept only because they hold an embedding column's min or max
    num_texts: int
    max_length: int | None
    parameters_before: int
    parameters_after: int
    weights_bytes_before: int
    weights_bytes_after: int
    kept_ids: list[int]


def _saved_class(config):
    """The transformers class the model was saved as (`config.architectures`): loaded with it, the model keeps every
    weight, its head included, whatever task it does. (Not `distilnlp.onnx.tasks`: the exporter sits above this
    module and imports it.)"""
    import transformers

    model_class = getattr(transformers, (config.architectures or [""])[0], None)
    if model_class is None:
        raise ValueError(
            f"Cannot tell which transformers class to load the model with (config.architectures = "
            f"{config.architectures}); save it with save_pretrained() from its *ForSequenceClassification or "
            "*ForTokenClassification class."
        )
    return model_class


def _token_ids(tokenizer, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    ids = []
    for start in range(0, len(texts), _BATCH):
        batch = tokenizer(
            list(texts[start : start + _BATCH]), truncation=max_length is not None, max_length=max_length
        )
        ids.extend(batch["input_ids"])
    return ids


def _remap_tokenizer_json(state: dict, new_id: dict[int, int]) -> dict:
    """The `tokenizers` JSON of a WordPiece tokenizer with its vocab, added tokens and post-processor ids remapped."""
    model = state["model"]
    model["vocab"] = {tok: new_id[i] for tok, i in model["vocab"].items() if i in new_id}
    for added in state.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    post = state.get("post_processor") or {}
    processors = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for proc in processors:
        if proc.get("type") == "TemplateProcessing":
            for special in proc["special_tokens"].values():
                special["ids"] = [new_id[i] for i in special["ids"]]
        elif proc.get("type") in ("BertProcessing", "RobertaProcessing"):
            for key in ("cls", "sep"):
                proc[key] = [proc[key][0], new_id[proc[key][1]]]
    return state


def _load_wordpiece_model(model_dir: str | os.PathLike):
    """(fast tokenizer, its `tokenizers` JSON state, classifier in eval mode) of a WordPiece model folder."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(
            f"Vocabulary trimming needs a fast tokenizer; {model_dir} has {type(tokenizer).__name__}."
        )
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if state["model"]["type"] != "WordPiece":
        raise ValueError(
            f"Vocabulary trimming supports WordPiece tokenizers (BERT, DistilBERT, ELECTRA, MiniLM); {model_dir} "
            f"uses {state['model']['type']}."
        )
    config = AutoConfig.from_pretrained(model_dir)
    model = load_model_folder(_saved_class(config), model_dir, "model").eval()
    if model.get_output_embeddings() is not None:
        raise ValueError(
            "The model has an output embedding layer (a language-model head); trim a classifier."
        )
    return tokenizer, state, model


def _ids_to_keep(tokenizer, original: list[list[int]], weight: torch.Tensor, keep_quantization_ranges: bool):
    """(ids the texts and special tokens use, every id kept: those plus the embedding columns' extreme rows)."""
    used = {i for ids in original for i in ids} | set(tokenizer.all_special_ids)
    used |= {i for i in tokenizer.added_tokens_decoder}
    kept = set(used)
    if keep_quantization_ranges:
        # A per-tensor range is the min / max over all columns' extremes, so these rows cover it too.
        kept |= set(weight.argmax(0).tolist()) | set(weight.argmin(0).tolist())
    return used, kept


def _save_trimmed_model(
    model, weight: torch.Tensor, kept_ids: list[int], new_id: dict, output_dir: Path
) -> None:
    """Give `model` the kept rows of its embedding matrix (vocab size and pad id follow) and save it."""
    new_embeddings = torch.nn.Embedding(len(kept_ids), weight.shape[1], padding_idx=None)
    new_embeddings.weight.data = weight[torch.tensor(kept_ids)].clone()
    model.set_input_embeddings(new_embeddings)
    model.config.vocab_size = len(kept_ids)
    if model.config.pad_token_id is not None:
        model.config.pad_token_id = new_id[model.config.pad_token_id]
    model.save_pretrained(output_dir)


def _save_trimmed_tokenizer(
    tokenizer, state: dict, kept_ids: list[int], new_id: dict, output_dir: Path
) -> None:
    """Save the tokenizer with its vocab cut to `kept_ids`: tokenizer.json, vocab.txt and the added-token ids of
    tokenizer_config.json renumbered to the new ids."""
    tokenizer.save_pretrained(output_dir)
    (output_dir / "tokenizer.json").write_text(
        json.dumps(_remap_tokenizer_json(state, new_id), ensure_ascii=False)
    )
    by_id = {i: tok for tok, i in tokenizer.get_vocab().items()}
    (output_dir / "vocab.txt").write_text("".join(f"{by_id[i]}\n" for i in kept_ids), encoding="utf-8")
    tok_config_path = output_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text())
    if "added_tokens_decoder" in tok_config:
        tok_config["added_tokens_decoder"] = {
            str(new_id[int(i)]): v for i, v in tok_config["added_tokens_decoder"].items()
        }
    tok_config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")


def trim_vocabulary(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    keep_quantization_ranges: bool = True,
    check_logits_on: int = 64,
) -> VocabularyTrim:
    """Write to `output_dir` a copy of the model in `model_dir` whose vocabulary holds only what `texts` use.

    Raises:
        ValueError: the tokenizer is not a fast WordPiece tokenizer, the model ties its input embeddings to an
            output layer, or the check fails (a text tokenizes differently, or logits change).
    """
    if not texts:
        raise ValueError("trim_vocabulary needs the task's texts: with none, every token would be dropped.")
    tokenizer, state, model = _load_wordpiece_model(model_dir)
    weight = model.get_input_embeddings().weight.detach()  # (vocab, hidden)

    original = _token_ids(tokenizer, texts, max_length)
    used, kept = _ids_to_keep(tokenizer, original, weight, keep_quantization_ranges)
    kept_ids = sorted(kept)
    new_id = {old: new for new, old in enumerate(kept_ids)}

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    bytes_before = sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))
    params_before = sum(p.numel() for p in model.parameters())
    _save_trimmed_model(model, weight, kept_ids, new_id, output_dir)
    _save_trimmed_tokenizer(tokenizer, state, kept_ids, new_id, output_dir)

    _check(model_dir, output_dir, texts, original, new_id, max_length, check_logits_on)
    report = VocabularyTrim(
        vocab_size_before=weight.shape[0],
        vocab_size_after=len(kept_ids),
        used_tokens=len(used),
        range_rows=len(kept - used),
        num_texts=len(texts),
        max_length=max_length,
        parameters_before=params_before,
        parameters_after=sum(p.numel() for p in model.parameters()),
        weights_bytes_before=bytes_before,
        weights_bytes_after=sum(p.stat().st_size for p in output_dir.glob("*.safetensors")),
        kept_ids=kept_ids,
    )
    (output_dir / VOCABULARY_TRIM_FILE).write_text(json.dumps(asdict(report)) + "\n")
    logger.info(
        f"Trimmed the vocabulary from {report.vocab_size_before} to {report.vocab_size_after} tokens "
        f"({report.range_rows} kept for int8 ranges); weights {bytes_before / 1e6:.1f} MB -> "
        f"{report.weights_bytes_after / 1e6:.1f} MB"
    )
    return report


def _check(model_dir, output_dir, texts, original, new_id, max_length, check_logits_on) -> None:
    """Every text tokenizes to the remapped original ids; logits on the first texts are bit-identical."""
    trimmed_tokenizer = AutoTokenizer.from_pretrained(output_dir)
    trimmed = _token_ids(trimmed_tokenizer, texts, max_length)
    for index, (old, new) in enumerate(zip(original, trimmed, strict=True)):
        if [new_id[i] for i in old] != new:
            raise ValueError(
                f"Text {index} tokenizes differently after trimming; the rewritten tokenizer is wrong."
            )
    sample = list(texts[:check_logits_on])
    if not sample:
        return
    models = [
        _saved_class(AutoConfig.from_pretrained(d)).from_pretrained(d).eval() for d in (model_dir, output_dir)
    ]
    tokenizers = [AutoTokenizer.from_pretrained(model_dir), trimmed_tokenizer]
    with torch.inference_mode():
        for start in range(0, len(sample), 16):
            logits = []
            for model, tok in zip(models, tokenizers, strict=True):
                enc = tok(  # at most the model's positions: whole articles can be longer
                    sample[start : start + 16],
                    padding=True,
                    truncation=True,
                    max_length=max_length or model.config.max_position_embeddings,
                    return_tensors="pt",
                )
                logits.append(model(**enc).logits)
            if not torch.equal(*logits):
                diff = (logits[0] - logits[1]).abs().max().item()
                raise ValueError(
                    f"Logits change after trimming (max |difference| {diff:.3g}); please report this."
                )


class _TrimmedCopy:
    """A trimmed copy of a model in a scratch folder, for `export_model(trim_vocabulary=True)`."""

    def __init__(self, model_dir: str | os.PathLike, texts: Sequence[str]):
        import tempfile

        self._scratch = tempfile.TemporaryDirectory(prefix="distilnlp-trim-")
        self.model_dir = Path(self._scratch.name)
        self.report = trim_vocabulary(model_dir, self.model_dir, texts)

    def finish(self, output_dir: str | os.PathLike) -> dict:
        """Copy the kept-ids record beside the export, drop the scratch copy; the summary without the id list."""
        import shutil

        shutil.copy(self.model_dir / VOCABULARY_TRIM_FILE, Path(output_dir) / VOCABULARY_TRIM_FILE)
        self._scratch.cleanup()
        return {k: v for k, v in asdict(self.report).items() if k != "kept_ids"}


def trim_for_export(model_dir: str | os.PathLike, texts: Sequence[str] | None) -> _TrimmedCopy:
    """Trim `model_dir`'s vocabulary to `texts` (tokenized whole, not truncated: the exported model may be given
    longer inputs than training saw) in a scratch folder; `finish(output_dir)` records it and removes the copy."""
    if not texts:
        raise ValueError(
            "--trim_vocabulary needs the task's texts to know which tokens to keep: pass --dataset (distilnlp "
            "export) or vocabulary_texts (export_model)."
        )
    return _TrimmedCopy(model_dir, texts)
