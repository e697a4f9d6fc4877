"""Mixed precision, and the `distill` command under `accelerate launch` on two processes."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_ddp import accelerate_launch
from tiny import pad_collate, save_tiny_model, tiny_pair, token_dataset, write_topic_csv

from distilnlp import DistillationTrainer, DistillationTrainingArguments


def test_bf16_autocast_distillation_trains_and_keeps_the_teacher_fp32(tmp_path):
    teacher, student = tiny_pair()
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path),
        bf16=True,
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=8,
        report_to="none",
        save_strategy="no",
        hidden_weight=1.0,
        attention_weight=1.0,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=token_dataset(24),
        data_collator=pad_collate,
    )
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in teacher.parameters())


@pytest.mark.slow
def test_distill_recipe_runs_unchanged_under_accelerate_launch_on_two_processes(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=60)
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "teacher": str(teacher),
                "dataset": str(data),
                "student_layers": 2,
                "output_dir": str(tmp_path / "student"),
                "max_steps": 4,
                "per_device_train_batch_size": 4,
                "hidden_weight": 1.0,
                "attention_weight": 1.0,
                "report_to": "none",
                "save_strategy": "no",
                "disable_tqdm": True,
            }
        )
    )
    command = accelerate_launch("-m", "distilnlp", "distill", str(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "student" / "distill_results.json").read_text())
    assert results["training"]["train_batch_size"] == 8  # 4 per process x 2 processes
    assert results["student_shape"]["layers"] == 2
    assert "student test accuracy" in result.stdout


@pytest.mark.slow
def test_python_api_script_exits_cleanly_under_accelerate_launch_ten_times_in_a_row(tmp_path):
    """The README's Python pattern, 1 step, 2 gloo processes, 10 launches: every one exits 0 (it used to end
    with "terminate called without an active exception" in 2 of 8; see `distilnlp.runs.distributed`)."""
    here = Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for attempt in range(10):
        command = accelerate_launch(str(here / "ddp_one_step.py"), str(tmp_path / f"run{attempt}"))
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert "terminate called" not in result.stderr, f"launch {attempt}: {result.stderr[-3000:]}"
        assert result.returncode == 0, f"launch {attempt}: {result.stderr[-3000:]}"
