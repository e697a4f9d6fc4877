"""Run an exported classifier with ONNX Runtime alone: tokenize, run the session, return labels and scores.

    classifier = OnnxClassifier.from_pretrained("runs/onnx")            # model_quantized.onnx when present
    classifier(["Shares fell sharply in early trading."])
    # [{'label': 'business', 'score': 0.97}]                            as transformers.pipeline("text-classification")

A token classifier returns, per text, its tagged tokens like `pipeline("token-classification")` without
aggregation: `{'entity', 'score', 'index', 'word', 'start', 'end'}`, tokens tagged `O` left out; with
`aggregation_strategy="simple"`, its entities as that pipeline groups them:

    tagger(["Angela Merkel visited Paris ."], aggregation_strategy="simple")
    # [[{'entity_group': 'PER', 'score': 0.99, 'word': 'angela merkel', 'start': 0, 'end': 13}, ...]]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from transformers import AutoConfig

from ..runs.artifacts import ONNX_FILE, QUANTIZED_FILE, has_tokenizer
from ..runs.model_files import saved_tokenizer
from .tasks import _task


def session_options(num_threads: int | None = None):
    """CPU session options: `num_threads` intra-op threads (default: every core) and one inter-op thread (the
    graph is a chain of ops: parallel branches gain nothing)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return options


class OnnxClassifier:
    """A sequence or token classifier exported by `distilnlp export`, run on ONNX Runtime's CPU provider."""

    def __init__(self, path: str | os.PathLike, tokenizer, config, num_threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.tokenizer = tokenizer
        self.config = config
        self.task = _task(config)
        self.session = ort.InferenceSession(
            str(path), session_options(num_threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, file_name: str | None = None, num_threads: int | None = None
    ) -> OnnxClassifier:
        """Load `folder / file_name` (default: the int8 graph when the folder has one, else the fp32 graph) with
        the tokenizer and config saved beside it."""
        folder = Path(folder)
        file_name = file_name or (QUANTIZED_FILE if (folder / QUANTIZED_FILE).is_file() else ONNX_FILE)
        if not (folder / file_name).is_file():
            raise FileNotFoundError(
                f"{folder / file_name} does not exist; export a model there with: distilnlp export MODEL_DIR "
                f"--output {folder}"
            )
        tokenizer = None  # logits() on encoded batches still works without one; __call__ says why not
        if has_tokenizer(folder):  # logits() on encoded batches works without one
            tokenizer = saved_tokenizer(folder)
        return cls(folder / file_name, tokenizer, AutoConfig.from_pretrained(folder), num_threads)

    def logits(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits of an encoded batch ((batch, length) int arrays; keys the graph does not take are ignored):
        (batch, labels), or (batch, length, labels) for a token classifier. Missing token type ids are zeros, as
        the tokenizer would make them for single texts."""
        feed = {n: np.asarray(batch[n], dtype=np.int64) for n in self.input_names if n in batch}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return self.session.run(None, feed)[0]

    def __call__(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        top_k: int | None = 1,
        max_length: int = 512,
        aggregation_strategy: str = "none",
    ) -> list:
        """Predictions for `texts`, as `transformers.pipeline` gives them: per text the top label and its score
        (`top_k` labels as a list, or all with `top_k=None`), or the tagged tokens of a token classifier
        (`aggregation_strategy="simple"`: its entities, grouped as that pipeline strategy does)."""
        if aggregation_strategy not in ("none", "simple"):
            raise ValueError(
                f"aggregation_strategy must be 'none' or 'simple', got {aggregation_strategy!r}."
            )
        if self.tokenizer is None:
            raise ValueError(
                f"{self.path.parent} has no tokenizer; save it there: tokenizer.save_pretrained(folder)."
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            encoded = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
                return_offsets_mapping=self.task == "token-classification",
            )
            logits = self.logits(encoded)
            if self.task == "token-classification":
                simple = aggregation_strategy == "simple"
                results += [self._tokens(encoded, row, logits[row], simple) for row in range(len(chunk))]
            else:
                results += [self._labels(row, top_k) for row in logits]
        return results

    def _scores(self, logits: np.ndarray) -> np.ndarray:
        if getattr(self.config, "problem_type", None) == "multi_label_classification":
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)

    def _labels(self, logits: np.ndarray, top_k: int | None) -> dict | list[dict]:
        scores = self._scores(logits)
        order = np.argsort(-scores)[: top_k or len(scores)]
        ranked = [{"label": self.config.id2label[int(i)], "score": float(scores[i])} for i in order]
        return ranked[0] if top_k == 1 else ranked

    def _tokens(self, encoded, row: int, logits: np.ndarray, simple: bool = False) -> list[dict]:
        scores = self._scores(logits)
        special = self.tokenizer.get_special_tokens_mask(
            encoded["input_ids"][row].tolist(), already_has_special_tokens=True
        )
        tagged = []
        for index, (is_special, real) in enumerate(zip(special, encoded["attention_mask"][row], strict=True)):
            label = self.config.id2label[int(scores[index].argmax())]
            if is_special or not real or (label == "O" and not simple):  # grouping needs the O tokens too
                continue
            start, end = (int(x) for x in encoded["offset_mapping"][row][index])
            tagged.append(
                {
                    "entity": label,
                    "score": float(scores[index].max()),
                    "index": index,
                    "word": self.tokenizer.convert_ids_to_tokens(int(encoded["input_ids"][row][index])),
                    "start": start,
                    "end": end,
                }
            )
        return self._group(tagged) if simple else tagged

    def _group(self, tokens: list[dict]) -> list[dict]:
        """Entities of tagged tokens as `pipeline(..., aggregation_strategy="simple")` groups them: adjacent
        tokens of one type join unless a token is B-; a group's score is the mean of its tokens'; O dropped."""
        groups: list[list[dict]] = []
        for token in tokens:
            prefix, kind = _split_tag(token["entity"])
            if groups and prefix != "B" and kind == _split_tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(token)
            else:
                groups.append([token])
        entities = [
            {
                "entity_group": _split_tag(group[0]["entity"])[1],
                "score": float(np.mean([t["score"] for t in group])),
                "word": self.tokenizer.convert_tokens_to_string([t["word"] for t in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]
        return [entity for entity in entities if entity["entity_group"] != "O"]


def _split_tag(label: str) -> tuple[str, str]:
    """('B' or 'I', entity type) of an IOB label; a label without a prefix (O) is ('I', label), as the
    transformers pipeline reads it."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label
