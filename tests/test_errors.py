"""Every error one line, through the CLI: damaged weights, recipe values of the wrong type, a full disk in any
of the forms torch and safetensors report it, unreadable transfer files, soft labels that match nothing, and
help strings with a '%'. Each case: the exit status, the one line, and no traceback."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from safetensors import SafetensorError
from tiny import save_tiny_model, write_topic_csv

from distilnlp.commands.cli import disk_full, main
from distilnlp.distill.trainer import DistillationTrainer


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(good model folder, the same with a truncated model.safetensors, CSV)."""
    tmp = tmp_path_factory.mktemp("task")
    good, bad = save_tiny_model(tmp / "good", num_labels=3), save_tiny_model(tmp / "bad", num_labels=3)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return good, bad, write_topic_csv(tmp / "topics.csv", n=60)


QUICK = ["--max_steps", "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true"]


def one_line_error(capsys, *expected: str) -> str:
    """The command's stderr must end in one `error:` line holding `expected`, with no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "error:" in lines[-1] and "Traceback" not in err, err[-3000:]
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


# ------------------------------------------------------------------------------------------ damaged weights


def test_a_truncated_model_safetensors_is_named_by_every_command(task, tmp_path, capsys):
    good, bad, data = task
    damaged = str(bad / "model.safetensors")
    common = ["--dataset", str(data)]
    for argv, role in (
        (["finetune", "--model_name_or_path", str(bad), "--output_dir", str(tmp_path / "f"), *common, *QUICK],
         "base model"),
        (["distill", "--teacher", str(bad), "--output_dir", str(tmp_path / "d"), *common, *QUICK], "teacher"),
        (["distill", "--teacher", str(good), "--student", str(bad), "--output_dir", str(tmp_path / "s"),
          *common, *QUICK], "student"),
        (["cache-teacher", "--teacher", str(bad), "--teacher_cache", str(tmp_path / "c"),
          "--output_dir", str(tmp_path / "c-run"), *common, *QUICK], "teacher"),
        (["export", str(bad), "--output", str(tmp_path / "onnx"), *common], "model"),
        (["benchmark", "--teacher", str(good), "--student", str(bad), "--output_dir", str(tmp_path / "b"),
          *common], "student (PyTorch fp32)"),
    ):  # fmt: skip
        assert main(argv) == 1, argv
        one_line_error(
            capsys, f"The {role} weights {damaged} do not load", "truncated", "Re-save", "download"
        )
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "f" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------- recipe types


@pytest.mark.parametrize(
    "recipe, expected",
    [
        ("output_dir: {a: 1}", "output_dir is {'a': 1} (a mapping) but must be a str (text) or null"),
        ("alpha: [0.5]", "alpha is [0.5] (a list) but must be a float (a number)"),
        ("alpha: true", "alpha is True (a bool) but must be a float (a number)"),
        ("max_steps: 2.5", "max_steps is 2.5 (a float) but must be an int"),
        ("use_cpu: 1", "use_cpu is 1 (an int) but must be a bool (true or false)"),
        (
            "teacher: {a: 1}",
            "teacher is {'a': 1} (a mapping) but must be a list of str or null, or comma-separated text",
        ),
        ("save_strategy: [steps]", "save_strategy is ['steps'] (a list) but must be a str"),
        ("temperature: null", "temperature is None (null) but must be a float (a number)"),
    ],
)
def test_recipe_values_of_the_wrong_type_are_one_line_with_status_2(task, tmp_path, capsys, recipe, expected):
    good, _, data = task
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe + "\n")
    assert main(["distill", str(path), "--teacher", str(good), "--dataset", str(data)]) == 2
    one_line_error(capsys, f"Recipe {path}: {expected}")
    assert not (tmp_path / "runs").exists()


def test_recipe_values_that_fit_their_fields_still_parse(tmp_path):
    from distilnlp.commands.arguments import DistillArguments
    from distilnlp.commands.config import parse_config
    from distilnlp.commands.search import SearchArguments
    from distilnlp.data import DataArguments
    from distilnlp.distill.arguments import DistillationTrainingArguments

    path = tmp_path / "recipe.yaml"
    path.write_text(
        "teacher: [t1, t2]\nteacher_weights: [1, 3]\nalpha: 1\nlearning_rate: 1e-3\nstudent_layer_selection: 3\n"
        "save_strategy: no\nreport_to: [none]\nsearch_alpha: [0, 1]\nuse_cpu: true\noutput_dir: out\n"
    )
    types = (DistillArguments, DataArguments, DistillationTrainingArguments, SearchArguments)
    distill_args, _, args, search_args = parse_config(types, [str(path)])
    assert distill_args.teachers == ["t1", "t2"] and args.teacher_weights == [1.0, 3.0]  # typed lists
    assert args.alpha == 1.0 and args.learning_rate == 1e-3 and distill_args.student_layer_selection == "3"
    assert search_args.search_alpha == [0, 1] and args.use_cpu is True


# ------------------------------------------------------------------------------------------------ full disk

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 92736 vs 92628"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def test_each_form_of_a_full_disk_is_recognised():
    context = RuntimeError(TORCH_FULL)
    context.__context__ = RuntimeError("basic_ios::clear: iostream error")
    for error in (
        OSError(28, "No space left on device"),
        context,
        RuntimeError("[enforce fail at inline_container.cc:591] . PytorchStreamWriter failed writing file"),
        SafetensorError(SAFETENSORS_FULL),
    ):
        assert disk_full(error), error
    wrapped = ValueError("saving failed")
    wrapped.__cause__ = OSError(28, "No space left on device")
    assert disk_full(wrapped)
    for error in (
        RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"),
        SafetensorError("Error while deserializing header: incomplete metadata, file not fully covered"),
        OSError(2, "No such file or directory"),
    ):
        assert not disk_full(error), error


def distill_argv(task, out):
    good, _, data = task
    return ["distill", "--teacher", str(good), "--dataset", str(data), "--output_dir", str(out),
            "--student_layers", "2", "--max_steps", "6", "--save_steps", "2", "--per_device_train_batch_size",
            "8", "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--seed", "0"]  # fmt: skip


def test_torch_full_disk_in_a_checkpoint_is_one_line_and_the_rerun_resumes(
    task, tmp_path, capsys, caplog, monkeypatch
):
    out = tmp_path / "student"
    save_rest = DistillationTrainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if self.state.global_step == 4:  # what torch.save raises when the disk fills up under it
            raise RuntimeError(TORCH_FULL) from RuntimeError("basic_ios::clear: iostream error")
        return save_rest(self, output_dir)

    monkeypatch.setattr(DistillationTrainer, "_save_optimizer_and_scheduler", full_disk)
    assert main(distill_argv(task, out)) == 1
    line = one_line_error(capsys, "No space left on device (RuntimeError: [enforce fail at inline_container")
    assert "Free some disk space and run the same command again: it resumes from the last complete" in line
    monkeypatch.setattr(DistillationTrainer, "_save_optimizer_and_scheduler", save_rest)
    caplog.set_level(logging.WARNING)
    assert main(distill_argv(task, out)) == 0
    assert "checkpoint-4: no trainer_state.json" in caplog.text and "checkpoint-2" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_safetensors_full_disk_in_the_final_save_is_one_line_and_the_rerun_finishes(
    task, tmp_path, capsys, monkeypatch
):
    import transformers.modeling_utils

    out = tmp_path / "student"
    save_file = transformers.modeling_utils.safe_save_file

    def full_disk(tensors, filename, *args, **kwargs):
        if "checkpoint-" not in str(filename):  # the final save into output_dir
            raise SafetensorError(SAFETENSORS_FULL)
        return save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    assert main(distill_argv(task, out)) == 1
    line = one_line_error(capsys, SAFETENSORS_FULL, "Free some disk space", "resumes from the last complete")
    assert "--debug" in line
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    assert main(distill_argv(task, out)) == 0
    assert (out / "model.safetensors").is_file() and (out / "distill_results.json").is_file()


def test_a_full_disk_outside_training_does_not_promise_a_resume(task, tmp_path, capsys, monkeypatch):
    import distilnlp.commands.cache_teacher as cache_teacher

    good, _, data = task

    def full_disk(*args, **kwargs):
        raise SafetensorError(SAFETENSORS_FULL)

    monkeypatch.setattr(cache_teacher, "build_teacher_cache", full_disk)
    argv = ["cache-teacher", "--teacher", str(good), "--dataset", str(data), "--teacher_cache",
            str(tmp_path / "cache"), "--output_dir", str(tmp_path / "run"), "--use_cpu", "true"]  # fmt: skip
    assert main(argv) == 1
    line = one_line_error(
        capsys, "No space left on device", "Free some disk space and run the same command again"
    )
    assert "resumes" not in line


# ------------------------------------------------------------------------------------------- transfer files


def transfer_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """{case: (file, what the one line must say)}."""
    folder.mkdir()
    binary = bytes(range(256)) * 8
    cases = {}
    for suffix in ("txt", "csv", "jsonl"):
        empty = folder / f"empty.{suffix}"
        empty.write_bytes(b"")
        cases[f"empty {suffix}"] = (empty, f"The transfer file {empty} is empty (0 bytes)")
        blob = folder / f"binary.{suffix}"
        blob.write_bytes(binary)
        cases[f"binary {suffix}"] = (blob, f"{blob} is not UTF-8 text (a NUL byte at offset 0: a binary")
    latin = {"txt": "caf\xe9 w1\nw2\n", "csv": "text\ncaf\xe9 w1\n", "jsonl": '{"text": "caf\xe9 w1"}\n'}
    for suffix, text in latin.items():
        path = folder / f"latin.{suffix}"
        path.write_bytes(text.encode("latin-1"))
        offset = text.index("\xe9")
        cases[f"latin-1 {suffix}"] = (
            path,
            f"{path} is not UTF-8 text (byte 0xe9 at offset {offset}); re-save",
        )
    return cases


def test_unreadable_transfer_files_name_the_file_and_the_cause(tmp_path):
    from distilnlp.data import load_transfer_texts

    for case, (path, expected) in transfer_files(tmp_path / "transfer").items():
        with pytest.raises(ValueError) as raised:
            load_transfer_texts(str(path))
        assert expected in str(raised.value), case
        assert "DatasetGenerationError" not in str(raised.value), case


def test_an_unreadable_transfer_file_is_one_line_through_the_cli(task, tmp_path, capsys):
    good, _, data = task
    cases = transfer_files(tmp_path / "transfer")
    for case in ("empty txt", "binary jsonl", "latin-1 csv"):
        path, expected = cases[case]
        argv = ["distill", "--teacher", str(good), "--dataset", str(data), "--transfer_dataset", str(path),
                "--output_dir", str(tmp_path / "out"), *QUICK]  # fmt: skip
        assert main(argv) == 1, case
        one_line_error(capsys, expected)


# ----------------------------------------------------------------------------------------------- soft labels


def test_soft_labels_that_match_nothing_say_why(task, tmp_path, capsys):
    import pandas as pd

    from distilnlp.data import DataArguments, load_task_data

    _, _, data = task
    student = save_tiny_model(tmp_path / "student", num_labels=3, layers=2)
    texts = pd.read_csv(data)["text"].tolist()
    transfer = [f"w{i % 50 + 5} w{(i * 7) % 50 + 5} w{i % 9 + 60} w{i}" for i in range(20)]
    (tmp_path / "transfer.txt").write_text("\n".join(transfer) + "\n")

    def soft_file(name, keyed):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": t, "logits": [1.0, 0.0, 0.0]}) + "\n" for t in keyed))
        return path

    def run(soft, *extra):
        argv = ["distill", "--soft_labels", str(soft), "--student", str(student), "--dataset", str(data),
                "--output_dir", str(tmp_path / "out"), "--save_strategy", "no", *QUICK, *extra]  # fmt: skip
        return main(argv)

    with_transfer = soft_file("with_transfer.jsonl", texts + transfer)
    assert run(with_transfer) == 1
    one_line_error(
        capsys,
        f"row 61 matches no text of the task data (text {transfer[0]!r}; 20 of 80 rows match none)",
        "no --transfer_dataset is given; if these rows label transfer texts, pass their file as --transfer_dataset",
    )
    transfer_flag = ["--transfer_dataset", str(tmp_path / "transfer.txt")]
    assert run(with_transfer, *transfer_flag, "--transfer_window", "2") == 1
    one_line_error(
        capsys, "of the task data or the transfer set", "--transfer_window 2 cuts each transfer text"
    )
    assert run(with_transfer, *transfer_flag, "--max_transfer_samples", "5") == 1
    one_line_error(capsys, "row 66 matches no text", "--max_transfer_samples 5 keeps only the first 5")

    splits = load_task_data(DataArguments(dataset=str(data)))
    held_out = soft_file("held_out.jsonl", [*splits["validation"]["text"], *splits["test"]["text"]])
    assert run(held_out) == 1
    one_line_error(
        capsys, f"cover none of the {len(splits['train'])} training rows", "label the training texts"
    )

    huge = tmp_path / "huge.jsonl"  # past float32 in every row: the first row is named (not "cover none")
    huge.write_text("".join(json.dumps({"text": t, "logits": [1e39, 0, 0]}) + "\n" for t in texts))
    assert run(huge) == 1
    one_line_error(capsys, "huge.jsonl: row 1: a logits value is too large for float32")


# ------------------------------------------------------------------------------------------------------ help


def test_help_strings_with_a_percent_sign_render(capsys):
    from distilnlp.commands.config import make_parser

    @dataclasses.dataclass
    class Inherited:  # transformers 4.x's torch_empty_cache_steps help had a lone '%'
        steps: int | None = dataclasses.field(
            default=None, metadata={"help": "Helps at a cost of about [10% slower performance](https://x)."}
        )
        escaped: int = dataclasses.field(default=1, metadata={"help": "~20%% slower; 100% sure"})

    text = " ".join(make_parser((Inherited,), prog="p").format_help().split())
    assert "about [10% slower performance](https://x)" in text and "~20% slower; 100% sure" in text
    assert "option_strings" not in text

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"])  # "98.5% of" crashed argparse: "%o format: an integer is required"
    assert exit_.value.code == 0
    assert "over 98.5% of the" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    assert "~10% slower performance" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------------------ lengths


def test_a_length_with_no_room_for_text_is_refused_by_export_and_benchmark(task, tmp_path, capsys):
    """`--max_length 1` / `--sequence_length 1` used to end in a tensor-size RuntimeError on a long text."""
    good, _, _ = task
    long_text = tmp_path / "long.csv"
    long_text.write_text("text,label\n" + "".join(f"{' '.join(['w1'] * 10000)},{c}\n" for c in "abc" * 10))
    common = ["--dataset", str(long_text)]
    assert main(["export", str(good), "--output", str(tmp_path / "onnx"), "--max_length", "1", *common]) == 1
    one_line_error(capsys, "max_length=1 leaves no room for text", "use max_length >= ")
    argv = ["benchmark", "--teacher", str(good), "--student", str(good), "--output_dir", str(tmp_path / "b")]
    assert main([*argv, "--sequence_length", "1", *common]) == 1
    one_line_error(capsys, "sequence_length=1 leaves no room for text")
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "b").exists()
