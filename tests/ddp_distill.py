"""Run by tests/test_ddp.py, once under `accelerate launch --multi_gpu --num_processes 2` and once alone.

Writes the logged losses and a checksum of the final student weights to the JSON path in argv[1].
"""

import json
import sys

from tiny import pad_collate, tiny_pair, token_dataset
from torch.utils.data import SequentialSampler

from distilnlp import DistillationTrainer, DistillationTrainingArguments


class InOrderTrainer(DistillationTrainer):
    # The same example order in both runs, so a 2 x 4 global batch holds the same rows as a 1 x 8 one.
    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def main(out_path: str, per_device_batch: int, augmentation: str = "none") -> None:
    teacher, student = tiny_pair(seed=11)
    dataset = token_dataset(64, seed=11, min_len=3, max_len=30)
    args = DistillationTrainingArguments(
        output_dir=out_path + ".run",
        per_device_train_batch_size=per_device_batch,
        max_steps=6,
        learning_rate=5e-3,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        hidden_weight=1.0,
        attention_weight=1.0,
        augmentation=augmentation,
        augmentation_prob=0.3,
    )
    trainer = InOrderTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=dataset, data_collator=pad_collate
    )
    trainer.train()
    if trainer.is_world_process_zero():
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        checksum = sum(float(p.double().abs().sum()) for p in student.parameters())
        with open(out_path, "w") as f:
            json.dump({"world_size": trainer.args.world_size, "losses": losses, "checksum": checksum}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
