"""Exports into a folder that already holds things: a re-export replaces only the files distilnlp wrote, a failed
or killed export leaves the folder as it was (and its staging folders are cleaned up later), and the int8
parity report holds the int8 graph's own logit difference."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tiny import EXPORT_WORDS, save_wordpiece_model
from tiny import export as export_with
from transformers import AutoTokenizer

from distilnlp.onnx import ParityError, atomic, check_parity
from distilnlp.runs.artifacts import EXPORT_SUMMARY_FILE, ONNX_FILE, OPTIMIZED_FILE, QUANTIZED_FILE

pytestmark = pytest.mark.onnx

# At most 16 texts: one parity batch, so a direct computation pads them exactly as the check does.
TEXTS = [
    " ".join(EXPORT_WORDS[(13 * i + 7 * j) % len(EXPORT_WORDS)] for j in range(3 + i % 9)) for i in range(12)
]
NOTES = "my_notes.txt"


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def staging_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".distilnlp-export-"))


def export(model_dir, out, **kwargs):
    options = {"parity_texts": TEXTS, "min_agreement": 0.0, "quantize": "none"} | kwargs
    return export_with(model_dir, out, **options)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return save_wordpiece_model(tmp / "a", layers=1), save_wordpiece_model(tmp / "b", layers=1, seed=1)


def test_a_re_export_replaces_only_what_the_previous_export_wrote(models, tmp_path, caplog):
    first, second = models
    out = tmp_path / "onnx"
    export(first, out, optimize=1)
    written = json.loads((out / EXPORT_SUMMARY_FILE).read_text())["written_files"]
    assert written == sorted(p.name for p in out.iterdir()) and OPTIMIZED_FILE in written
    (out / NOTES).write_text("my own notes")
    (out / "plots").mkdir()
    (out / "plots" / "loss.png").write_bytes(b"png")
    before = digests(out)

    export(second, out)  # another model, no optimized graph this time
    after = digests(out)
    assert (out / NOTES).read_text() == "my own notes" and (out / "plots" / "loss.png").read_bytes() == b"png"
    assert OPTIMIZED_FILE not in after  # the previous export's, not this one's: removed
    assert after[ONNX_FILE] != before[ONNX_FILE]  # the new model's graph
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input_ids"
    summary = json.loads((out / EXPORT_SUMMARY_FILE).read_text())
    assert summary["arguments"]["model_dir"] == str(second) and summary["arguments"]["output_dir"] == str(out)
    assert NOTES not in summary["written_files"] and OPTIMIZED_FILE not in summary["written_files"]
    assert set(summary["written_files"]) == set(after) - {NOTES}
    assert staging_folders(tmp_path) == []

    # An export from before `written_files` was recorded: the names distilnlp exports use are its own.
    del summary["written_files"]
    (out / EXPORT_SUMMARY_FILE).write_text(json.dumps(summary))
    (out / "ort_config.json").write_text("{}")  # what the Optimum exports wrote
    (out / QUANTIZED_FILE).write_bytes(b"an old int8 graph")
    export(first, out)
    assert not (out / "ort_config.json").exists() and not (out / QUANTIZED_FILE).exists()
    assert (out / NOTES).read_text() == "my own notes" and (out / "plots" / "loss.png").is_file()

    # A user's file with a name the export writes (and the previous one did not) is replaced, with a warning.
    (out / OPTIMIZED_FILE).write_text("mine")
    caplog.set_level("WARNING", logger="distilnlp")
    export(first, out, optimize=1)
    assert f"Replacing {OPTIMIZED_FILE} in {out}, which no distilnlp export wrote" in caplog.text
    assert (out / OPTIMIZED_FILE).read_bytes()[:4] != b"mine"


def test_a_failed_export_leaves_the_previous_export_and_the_users_files_untouched(
    models, tmp_path, monkeypatch
):
    first, second = models
    out = tmp_path / "onnx"
    export(first, out)
    (out / NOTES).write_text("my own notes")
    before = digests(out)

    with pytest.raises(ParityError, match="max_abs_diff"):
        export(second, out, max_abs_diff=1e-30)
    assert digests(out) == before and staging_folders(tmp_path) == []

    # A failure while moving the files in (the last one, the summary) puts every file back.
    replace = os.replace

    def failing_replace(source, destination):
        if Path(destination) == out / EXPORT_SUMMARY_FILE:
            raise OSError(28, "No space left on device")
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        export(second, out)
    assert digests(out) == before and staging_folders(tmp_path) == []


# Exports into sys.argv[2] from sys.argv[1] and blocks for good just before moving its files in.
KILLED_EXPORT = """
import sys, time
from distilnlp.onnx import ExportArguments, atomic, export_model
atomic.move_in = lambda staging, target: time.sleep(3600)
export_model(ExportArguments(sys.argv[1], sys.argv[2], quantize="none", parity_samples=8))
"""


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_folders_of_killed_exports_are_removed_by_the_next_export(models, tmp_path):
    first, second = models
    out = tmp_path / "onnx"
    export(first, out)
    (out / NOTES).write_text("my own notes")
    before = digests(out)

    process = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(second), str(out)])
    staging = tmp_path / f".distilnlp-export-onnx-{process.pid}"
    deadline = time.monotonic() + 300
    while not (staging / EXPORT_SUMMARY_FILE).is_file():  # written, checked, about to move in
        assert process.poll() is None and time.monotonic() < deadline, "the export did not reach its move"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert digests(out) == before and staging.is_dir()

    dead = dead_pid()
    left = [f".distilnlp-export-onnx-{dead}", f".distilnlp-export-onnx-{dead}-old"]
    kept = [".distilnlp-export-onnx-1", f".distilnlp-export-onnx-2-{dead}"]  # pid 1 lives; another target's
    for name in left + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / ONNX_FILE).write_bytes(b"partial")
    export(second, out)
    assert staging_folders(tmp_path) == sorted(kept)
    assert (out / NOTES).read_text() == "my own notes"
    assert json.loads((out / EXPORT_SUMMARY_FILE).read_text())["arguments"]["model_dir"] == str(second)


def test_the_int8_report_holds_the_int8_graphs_difference_from_fp32(models, tmp_path):
    result = export(models[0], tmp_path / "onnx", quantize="dynamic")
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    batch = dict(tokenizer(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="np"))
    logits = []
    for path in (result.onnx_path, result.quantized_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits.append(session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})[0])
    int8_vs_fp32 = float(np.abs(logits[1] - logits[0]).max())

    parity = json.loads(result.summary_path.read_text())["parity"]
    assert parity["int8"]["max_abs_diff"] == pytest.approx(int8_vs_fp32, rel=1e-5)
    assert (
        parity["int8"]["max_abs_diff"] > 100 * parity["fp32"]["max_abs_diff"]
    )  # it used to be the fp32 figure
    assert parity["fp32"]["max_abs_diff"] <= 1e-4 and parity["fp32"]["threshold_max_abs_diff"] == 1e-4
    assert parity["int8"]["threshold_max_abs_diff"] is None  # reported, not gated
    report = check_parity(models[0], result.onnx_path, quantized_path=result.quantized_path, texts=TEXTS)
    assert report.max_abs_diff == pytest.approx(int8_vs_fp32, rel=1e-5)
