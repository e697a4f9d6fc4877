"""Run by tests/test_launch.py under `accelerate launch --multi_gpu --num_processes 2`: the README's Python
pattern (build a DistillationTrainer, call train(), return), one step on a tiny model; the script ends right
after `train()`, which is when gloo's worker threads used to race the interpreter's exit."""

import sys

from tiny import pad_collate, tiny_pair, token_dataset

from distilnlp import DistillationTrainer, DistillationTrainingArguments

teacher, student = tiny_pair(seed=11)
args = DistillationTrainingArguments(
    output_dir=sys.argv[1],
    per_device_train_batch_size=4,
    max_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    hidden_weight=1.0,
)
DistillationTrainer(
    model=student,
    teacher_model=teacher,
    args=args,
    train_dataset=token_dataset(16),
    data_collator=pad_collate,
).train()
