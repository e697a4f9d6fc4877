"""Write a fine-tuned classifier's class probabilities on BBC News to a JSONL file, as an outside tool would.

Plain `transformers` inference (no distilnlp machinery): one line per article,
`{"text": ..., "probabilities": {"business": 0.98, ...}}`, class names from the model's `id2label`. The file
is what `distilnlp distill --soft_labels FILE --student ...` reads; an LLM asked to label the same texts, a
hosted API or a model in another framework would write the same shape.

    python benchmarks/export_soft_labels.py --model runs/teacher --output runs/bbc_soft_labels.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilnlp.data import load_bbc_news  # only the texts: the bundled corpus, stripped as the task data is


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="fine-tuned sequence-classification model folder")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=64)
    cli = parser.parse_args()

    model = AutoModelForSequenceClassification.from_pretrained(cli.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(cli.model)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    texts = load_bbc_news()["text"]
    start = time.perf_counter()
    with open(cli.output, "w") as f, torch.inference_mode():
        for begin in range(0, len(texts), cli.batch_size):
            batch = texts[begin : begin + cli.batch_size]
            inputs = tokenizer(
                batch, truncation=True, max_length=cli.max_length, padding=True, return_tensors="pt"
            )
            probabilities = torch.softmax(model(**inputs).logits.double(), dim=-1).tolist()
            for text, row in zip(batch, probabilities, strict=True):
                f.write(
                    json.dumps({"text": text, "probabilities": dict(zip(names, row, strict=True))}) + "\n"
                )
    print(f"wrote {len(texts)} rows of {len(names)} class probabilities to {cli.output} "
          f"in {time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
