"""Fault injection for real: kill -9 in the middle of a checkpoint save, truncated checkpoints, a full disk,
two runs into one folder, damaged teacher-cache files, failing exports into a good folder, and bad input that
must end in one line naming the fix."""

import errno
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny import save_tiny_model, write_topic_csv

from distilnlp.commands.cli import main
from distilnlp.data import DataArguments
from distilnlp.distill.trainer import DistillationTrainer
from distilnlp.runs.artifacts import EXPORT_SUMMARY_FILE, QUANTIZED_FILE, RUN_LOCK_FILE
from distilnlp.runs.lock import OutputDirLockedError, acquire, output_dir_lock
from distilnlp.teacher_cache import CorruptTeacherCacheError, TeacherCache

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(teacher folder, CSV) shared by the tests: a tiny 4-layer teacher and a 3-class topic CSV."""
    tmp = tmp_path_factory.mktemp("task")
    return save_tiny_model(tmp / "teacher", num_labels=3), write_topic_csv(tmp / "topics.csv", n=60)


def distill_argv(task, out, *extra):
    teacher, data = task
    return [
        "--teacher", str(teacher), "--dataset", str(data), "--output_dir", str(out), "--student_layers", "2",
        "--max_steps", "6", "--save_steps", "2", "--per_device_train_batch_size", "8", "--report_to", "none",
        "--use_cpu", "true", "--disable_tqdm", "true", "--seed", "0", "--logging_steps", "1", *extra,
    ]  # fmt: skip


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


# -------------------------------------------------------------------------------------------- training runs


def test_kill_during_a_save_then_lock_refusal_then_resume_then_finished(task, tmp_path, capsys, caplog):
    out = tmp_path / "student"
    ready = tmp_path / "blocked"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]), "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, str(HERE / "fault_runner.py"), "4", str(ready), *distill_argv(task, out)]
    victim = subprocess.Popen(runner, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 400
        while not ready.exists():
            assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run never reached its save at step 4"
            time.sleep(0.5)
        # Two runs into one folder: the second refuses at once, naming the first.
        assert main(["distill", *distill_argv(task, out)]) == 1
        refusal = last_line(capsys.readouterr().err)
        assert f"in use by another run (PID {victim.pid}" in refusal
    finally:
        victim.kill()  # SIGKILL in the middle of writing checkpoint-4
        victim.wait()
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    assert not (out / "checkpoint-4" / "trainer_state.json").exists()
    assert (out / RUN_LOCK_FILE).exists()  # left behind by the killed process

    caplog.set_level(logging.WARNING)
    assert main(["distill", *distill_argv(task, out)]) == 0
    assert "Taking over the lock" in caplog.text
    assert "Skipping checkpoint" in caplog.text and "checkpoint-4: no trainer_state.json" in caplog.text
    assert "Resuming from" in caplog.text and "checkpoint-2" in caplog.text
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 6 and steps == sorted(set(steps)) and steps[-1] == 6
    assert not (out / RUN_LOCK_FILE).exists()

    # The same weights as a run that was never interrupted.
    assert main(["distill", *distill_argv(task, tmp_path / "clean")]) == 0
    resumed, clean = load_file(out / "model.safetensors"), load_file(tmp_path / "clean" / "model.safetensors")
    assert all(float((resumed[k] - clean[k]).abs().max()) < 1e-5 for k in clean)

    # A finished run is not trained again (the old code trained a 7th step of 6 here).
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    capsys.readouterr()
    assert main(["distill", *distill_argv(task, out)]) == 0
    assert "already holds a finished run" in caplog.text
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    # ... nor silently "resumed" with other settings.
    assert main(["distill", *distill_argv(task, out), "--alpha", "0.9"]) == 1
    error = last_line(capsys.readouterr().err)
    assert "finished run trained with other settings (alpha 0.5 in the checkpoint, 0.9 now)" in error
    assert "--overwrite_output_dir true" in error


def test_truncated_checkpoint_is_skipped_and_changed_settings_need_consent(task, tmp_path, capsys, caplog):
    out = tmp_path / "student"
    assert main(["distill", *distill_argv(task, out, "--max_steps", "4")]) == 0
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    caplog.set_level(logging.WARNING)
    assert main(["distill", *distill_argv(task, out)]) == 0  # 6 steps now: continues the run
    assert "checkpoint-4: the weights do not load" in caplog.text
    assert "Resuming from" in caplog.text and str(out / "checkpoint-2") in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6

    capsys.readouterr()
    longer = distill_argv(task, out, "--max_steps", "8", "--temperature", "4.0")
    assert main(["distill", *longer]) == 1
    error = last_line(capsys.readouterr().err)
    assert "temperature 2.0 in the checkpoint, 4.0 now" in error and "--allow_changed_settings true" in error
    assert main(["distill", *longer, "--allow_changed_settings", "true"]) == 0
    card = (out / "README.md").read_text()
    assert "| temperature (changed on resume) | 2.0 before the resumed checkpoint, 4.0 after |" in card
    assert "temperature 4.0" in card


def test_full_disk_during_a_save_is_one_line_and_the_rerun_resumes(
    task, tmp_path, capsys, caplog, monkeypatch
):
    out = tmp_path / "student"
    save_rest = DistillationTrainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.pt"))
        return save_rest(self, output_dir)

    monkeypatch.setattr(DistillationTrainer, "_save_optimizer_and_scheduler", full_disk)
    assert main(["distill", *distill_argv(task, out)]) == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert "No space left on device" in last_line(error) and "resumes from the last complete" in last_line(
        error
    )
    monkeypatch.setattr(DistillationTrainer, "_save_optimizer_and_scheduler", save_rest)
    caplog.set_level(logging.WARNING)
    assert main(["distill", *distill_argv(task, out)]) == 0
    assert "checkpoint-4: no trainer_state.json" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_lock_is_taken_by_the_main_process_only_and_stale_locks_are_taken_over(tmp_path, monkeypatch):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / RUN_LOCK_FILE).write_text(
        json.dumps({"pid": int(gone.stdout), "host": os.uname().nodename, "started": 0})
    )
    with output_dir_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputDirLockedError, match=f"PID {os.getpid()}"):
            acquire(tmp_path)
        monkeypatch.setenv("RANK", "1")  # another rank of the same accelerate run
        with output_dir_lock(tmp_path) as other:
            assert other is None
        monkeypatch.delenv("RANK")
    assert not (tmp_path / RUN_LOCK_FILE).exists()


# -------------------------------------------------------------------------------------------- teacher cache


def test_flipped_bytes_anywhere_in_the_cache_are_caught_before_arrow_reads_them(task, tmp_path):
    from distilnlp.commands.arguments import DistillArguments
    from distilnlp.commands.cache_teacher import cache_teacher
    from distilnlp.distill.arguments import DistillationTrainingArguments

    teacher, data = task
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"), teacher_cache=str(tmp_path / "cache")
    )
    distill_args, data_args = DistillArguments(teacher=str(teacher)), DataArguments(dataset=str(data))
    cache, built = cache_teacher(distill_args, data_args, args)
    assert built
    flips = 0
    for split in ("train", "validation"):
        for path in sorted((cache.path / split).iterdir()):
            original = path.read_bytes()
            for offset in sorted({0, 1, 7, 8, 64, len(original) // 3, len(original) // 2, len(original) - 1}):
                damaged = bytearray(original)
                damaged[offset] ^= 0xFF
                path.write_bytes(bytes(damaged))
                with pytest.raises(CorruptTeacherCacheError, match=f"{split}/{path.name} does not match"):
                    TeacherCache.load(cache.path).logits(split)
                flips += 1
            path.write_bytes(original)
    assert flips >= 40
    TeacherCache.load(cache.path).logits("train")  # intact again

    meta_path = cache.path / "distilnlp_teacher_cache.json"
    metadata = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(metadata | {"fingerprint": "0" * 64}))  # an edited fingerprint
    with pytest.raises(CorruptTeacherCacheError, match="was changed after the cache was built"):
        TeacherCache.load(cache.path)

    arrow = next((cache.path / "train").glob("*.arrow"))
    meta_path.write_text(json.dumps(metadata))
    arrow.write_bytes(arrow.read_bytes()[:-200] + b"\xff" * 200)
    cache, built = cache_teacher(distill_args, data_args, args)  # `cache-teacher` rebuilds a damaged cache
    assert built
    assert len(TeacherCache.load(cache.path).logits("train")) == cache.metadata["splits"]["train"]["rows"]


# ------------------------------------------------------------------------------------------------- exports


@pytest.mark.onnx
def test_failed_export_leaves_a_good_export_untouched_and_foreign_folders_are_refused(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model", num_labels=3)  # max_position_embeddings = 64
    long_texts = tmp_path / "long.csv"
    rows = [
        f'"{" ".join(f"w{(i * 7 + j) % 100 + 5}" for j in range(120))}",{"abc"[i % 3]}' for i in range(30)
    ]
    long_texts.write_text("text,label\n" + "\n".join(rows) + "\n")
    good = tmp_path / "onnx"
    common = ["--dataset", str(long_texts), "--min_agreement", "0.0", "--parity_samples", "8"]
    # 120-word texts at the default max_length 128 > 64 positions: clamped (it used to die inside ORT).
    assert main(["export", str(model), "--output", str(good), *common]) == 0
    assert json.loads((good / EXPORT_SUMMARY_FILE).read_text())["arguments"]["output_dir"] == str(good)
    before = digests(good)

    capsys.readouterr()
    assert main(["export", str(model), "--output", str(good), *common, "--max_abs_diff", "1e-30"]) == 1
    error = last_line(capsys.readouterr().err)
    assert "max_abs_diff" in error and "Traceback" not in error
    assert digests(good) == before  # nothing deleted or half-written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".distilnlp-export-")] == []

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    assert main(["export", str(model), "--output", str(mine), *common]) == 1
    assert "--overwrite true" in last_line(capsys.readouterr().err)
    assert (mine / "notes.txt").read_text() == "my own file"

    assert main(["export", str(tmp_path / "missing"), "--output", str(tmp_path / "x"), *common]) == 1
    assert "The model folder" in (error := last_line(capsys.readouterr().err)) and "does not exist" in error
    assert main(["export", str(model), "--output", str(tmp_path / "s"), "--quantize", "static"]) == 1
    error = last_line(capsys.readouterr().err)
    assert "static quantization calibrates on the task's own training texts; pass --dataset" in error

    quantized = good / QUANTIZED_FILE
    quantized.write_bytes(quantized.read_bytes()[:1000])
    bench = ["benchmark", "--teacher", str(model), "--student", str(model), "--onnx_dir", str(good)]
    assert main([*bench, "--output_dir", str(tmp_path / "bench"), *common[:2]]) == 1
    error = last_line(capsys.readouterr().err)
    assert f"{quantized} is not a readable ONNX model" in error and "re-export it" in error


# --------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_with_exit_status_2_or_1(task, tmp_path, capsys, monkeypatch):
    teacher, data = task
    base = ["distill", "--teacher", str(teacher), "--output_dir", str(tmp_path / "o")]
    for flags, expected in (
        (["--hidden_weight", "inf"], "hidden_weight must be a finite number, got inf"),
        (["--temperature", "nan"], "temperature must be a finite number, got nan"),
        (["--save_strategy", "sometimes"], "invalid choice: 'sometimes'"),
    ):
        assert main([*base, *flags]) == 2
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1 and expected in error, error

    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 w1,a\nw2,b\n".encode("latin-1"))
    assert main([*base, "--dataset", str(latin)]) == 1
    error = capsys.readouterr().err
    assert f"{latin} is not UTF-8 text (byte 0xe9 at offset 14)" in last_line(error)

    assert main([*base, "--hidden_weight", "inf", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("DISTILNLP_DEBUG", "1")
    assert main([*base, "--hidden_weight", "inf"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_single_example_class_is_named_when_the_split_cannot_be_stratified(tmp_path, caplog):
    from distilnlp.data import load_task_data

    rows = [f"w{i} x,{'a' if i < 10 else 'b' if i < 20 else 'lonely'}" for i in range(21)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    caplog.set_level(logging.WARNING)
    splits = load_task_data(
        DataArguments(dataset=str(tmp_path / "d.csv"), validation_size=0.2, test_size=0.2)
    )
    assert sum(len(s) for s in splits.values()) == 21
    assert "Cannot stratify" in caplog.text and "class(es) ['lonely'] have a single example" in caplog.text


def test_export_calibrates_on_the_data_recorded_with_the_model(tmp_path):
    from distilnlp.commands.deploy import task_data_for

    model = tmp_path / "student"
    model.mkdir()
    recorded = {"dataset": "runs/topics.csv", "text_column": "body", "label_column": "topic", "split_seed": 7}
    (model / "distill_results.json").write_text(json.dumps({"data": recorded}))
    chosen = task_data_for(model, DataArguments())  # the default dataset (bbc_news) was not asked for
    assert (chosen.dataset, chosen.text_column, chosen.label_column, chosen.split_seed) == (
        "runs/topics.csv",
        "body",
        "topic",
        7,
    )
    assert (
        task_data_for(model, DataArguments(dataset="other.csv")).dataset == "other.csv"
    )  # an explicit choice


def test_numbers_that_would_train_nothing_or_nonsense_are_one_line(task, tmp_path, capsys):
    teacher, data = task
    base = ["distill", "--teacher", str(teacher), "--dataset", str(data), "--output_dir", str(tmp_path / "o")]
    for flags, status, expected in (
        (["--num_train_epochs", "0"], 2, "num_train_epochs must be a finite number > 0, got 0.0"),
        (["--num_train_epochs", "-1"], 2, "num_train_epochs must be a finite number > 0, got -1.0"),
        (["--max_steps", "0"], 2, "max_steps must be > 0 (or -1: train for num_train_epochs), got 0"),
        (["--temp", "3"], 2, "unknown flag '--temp'. Did you mean '--temperature'?"),
        (
            ["--teacher_weights", "-1,2"],
            2,
            "teacher_weights='-1,2': every weight must be a finite number > 0",
        ),
        (
            ["--max_length", "1"],
            1,
            "max_length=1 leaves no room for text: the tokenizer adds 2 special token(s)",
        ),
    ):
        assert main([*base, *flags]) == status, flags
        error = capsys.readouterr().err
        assert expected in last_line(error), error
        assert not (tmp_path / "o" / "model.safetensors").exists()

    one_class = tmp_path / "one.csv"
    one_class.write_text("text,topic\n" + "".join(f"w{i} w{i + 1},only\n" for i in range(30)))
    finetune = ["finetune", "--model_name_or_path", str(teacher), "--dataset", str(one_class),
                "--label_column", "topic", "--output_dir", str(tmp_path / "f"), "--use_cpu", "true"]  # fmt: skip
    assert main(finetune) == 1
    assert f"The label column 'topic' of {one_class} holds one class (['only'])" in last_line(
        capsys.readouterr().err
    )
    assert not (tmp_path / "f" / "config.json").exists()


def test_a_soft_label_past_float32_range_is_named_by_row(tmp_path):
    from distilnlp.data import SoftLabelError, read_soft_labels

    path = tmp_path / "soft.jsonl"
    rows = [{"text": "w1", "logits": [0, 1, 2]}, {"text": "w2", "logits": [0, 1e39, 2]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SoftLabelError, match=r"soft.jsonl: row 2: a logits value is too large for float32"):
        read_soft_labels(path, ["a", "b", "c"])
