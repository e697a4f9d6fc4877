"""TensorBoard logging works through Trainer's own `report_to`, with the distillation loss components."""

from tensorboard.backend.event_processing import event_accumulator
from tiny import pad_collate, quick_distillation_args, tiny_pair, token_dataset

from distilnlp import DistillationTrainer


def test_report_to_tensorboard_writes_the_loss_components(tmp_path):
    teacher, student = tiny_pair()
    # Both transformers 4.57 and 5.x write under output_dir/runs/ by default (5.x dropped logging_dir).
    args = quick_distillation_args(tmp_path, report_to=["tensorboard"], logging_steps=1, max_steps=3)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=token_dataset(24, teacher=teacher),
        data_collator=pad_collate,
    )
    trainer.train()
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file written"
    accumulator = event_accumulator.EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/loss_soft", "train/loss_hard", "train/temperature"} <= tags
    assert len(accumulator.Scalars("train/loss_soft")) == 3  # one per logged step
