"""Run by tests/test_sharded_cache.py, once alone and once under `accelerate launch --num_processes 2`.

Builds teacher caches in the folder argv[1]: `single` (one teacher), `ensemble` (two teachers) through
`build_teacher_cache`, and `trainer` through a `DistillationTrainer` whose `teacher_cache` does not exist yet
(the path `distilnlp distill` takes). Every process returns the cache; process 0 writes `result.json`.
"""

import json
import sys
from pathlib import Path

from tiny import pad_collate, tiny_pair, token_dataset

from distilnlp import DistillationTrainer, DistillationTrainingArguments
from distilnlp.teacher_cache import build_teacher_cache


def splits():
    # 25 rows: slices of 13 and 12; 1 row: process 1's slice of `validation` is empty.
    return {"train": token_dataset(25, seed=5, min_len=3, max_len=30), "validation": token_dataset(1, seed=6)}


def teachers():
    return [tiny_pair(seed=11)[0], tiny_pair(seed=12)[0]]


def main(out: Path) -> None:
    first, second = teachers()
    data = splits()
    single = build_teacher_cache(out / "single", first, data, batch_size=4, max_length=30)
    ensemble = build_teacher_cache(out / "ensemble", [first, second], data, batch_size=4)
    args = DistillationTrainingArguments(
        output_dir=str(out / "run"),
        per_device_train_batch_size=4,
        max_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        teacher_cache=str(out / "trainer"),
    )
    trainer = DistillationTrainer(
        model=tiny_pair(seed=11)[1],
        teacher_model=first,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=pad_collate,
    )
    trainer.train()
    if trainer.is_world_process_zero():
        result = {
            "world_size": trainer.args.world_size,
            "fingerprints": {"single": single.fingerprint, "ensemble": ensemble.fingerprint},
        }
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
