"""Teacher cache built across processes: each `accelerate launch` rank writes its own shard, readers
take all shards, and the result equals a one-process build."""

import sys

import numpy as np
import pytest
from test_ddp import accelerate_launch
from tiny import save_tiny_model, write_topic_csv

from distilnlp.teacher_cache import LOGITS, TeacherCache, attach_teacher_logits


def cache_argv(teacher, data, transfer, cache, out) -> list[str]:
    return [
        "-m", "distilnlp", "cache-teacher", "--teacher", str(teacher), "--dataset", str(data),
        "--transfer_dataset", str(transfer), "--transfer_window", "4", "--teacher_cache", str(cache),
        "--output_dir", str(out), "--max_length", "16", "--teacher_cache_batch_size", "4", "--use_cpu",
    ]  # fmt: skip


def run(command, tmp_path):
    import os
    import subprocess
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_cache_build_equals_one_process(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=41)  # odd sizes: shards of unequal length
    transfer = tmp_path / "transfer.txt"
    transfer.write_text(
        "\n".join(" ".join(f"w{(3 * i + j) % 100 + 10}" for j in range(2 + i)) for i in range(9))
    )
    run([sys.executable, *cache_argv(teacher, data, transfer, tmp_path / "one", tmp_path / "o1")], tmp_path)
    run(accelerate_launch(*cache_argv(teacher, data, transfer, tmp_path / "two", tmp_path / "o2")), tmp_path)

    one, two = TeacherCache.load(tmp_path / "one"), TeacherCache.load(tmp_path / "two")
    assert one.metadata["processes"] == 1 and two.metadata["processes"] == 2
    assert sorted(p.name for p in (tmp_path / "two" / "train").iterdir()) == [
        "shard-00000-of-00002",
        "shard-00001-of-00002",
    ]
    assert one.fingerprint == two.fingerprint  # same teacher, tokenizer and inputs (row order included)
    for split in ("train", "validation"):
        rows_one, rows_two = one.metadata["splits"][split]["rows"], two.metadata["splits"][split]["rows"]
        assert rows_one == rows_two
        np.testing.assert_allclose(
            np.asarray(two.logits(split)[LOGITS]), np.asarray(one.logits(split)[LOGITS]), rtol=0, atol=1e-5
        )
    # The transfer rows (label -100) are part of the cached train split, after the labelled rows.
    assert one.metadata["splits"]["train"]["rows"] == round(41 * 0.8) + sum(
        -(-(2 + i) // 4) for i in range(9)
    )
    # The trainer's reader attaches the sharded cache to the same rows as the one-process cache.
    from transformers import AutoTokenizer

    from distilnlp.commands.stages import prepare_data
    from distilnlp.data import DataArguments

    args = DataArguments(dataset=str(data), transfer_dataset=str(transfer), transfer_window=4, max_length=16)
    _, tokenized, _ = prepare_data(args, AutoTokenizer.from_pretrained(teacher), with_transfer=True)
    attached = attach_teacher_logits(tokenized["train"], tmp_path / "two")
    np.testing.assert_allclose(
        np.asarray(attached[LOGITS]), np.asarray(one.logits("train")[LOGITS]), rtol=0, atol=1e-5
    )
