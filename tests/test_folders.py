"""`replace_folder`: the new folder takes the target's place whole, the old one is deleted, and a failure during
the swap leaves the old folder as it was."""

import errno
import os
import sys

import pytest

from distilnlp.runs import folders
from distilnlp.runs.folders import replace_folder


def make_folder(path, files: dict[str, bytes]):
    path.mkdir()
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(text)
    return path


def contents(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


NEW = {"metadata.json": b"new", "train/data.arrow": b"new rows"}
OLD = {"metadata.json": b"old", "validation/data.arrow": b"old rows"}


def swap_ways():
    """The atomic exchange (where this system has it) and the two-rename fallback."""
    return ["exchange", "renames"] if sys.platform.startswith("linux") else ["renames"]


@pytest.fixture(params=swap_ways())
def way(request, monkeypatch):
    if request.param == "renames":
        monkeypatch.setattr(folders, "_exchange", lambda first, second: False)
    return request.param


def test_replace_folder_swaps_in_the_new_contents_and_removes_the_old(tmp_path, way, monkeypatch):
    if way == "exchange":  # the exchange really runs (a filesystem without it would fall back silently)
        exchange, used = folders._exchange, []
        monkeypatch.setattr(folders, "_exchange", lambda a, b: used.append(exchange(a, b)) or used[-1])
    staging = make_folder(tmp_path / ".cache.building", NEW)
    target = make_folder(tmp_path / "cache", OLD)
    replace_folder(staging, target)
    assert contents(target) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # old contents and staging name gone
    if way == "exchange":
        assert used == [True]


def test_replace_folder_creates_a_missing_target(tmp_path):
    staging = make_folder(tmp_path / ".cache.building", NEW)
    replace_folder(staging, tmp_path / "sub" / "cache")
    assert contents(tmp_path / "sub" / "cache") == NEW
    assert not staging.exists()


def test_a_failed_exchange_leaves_the_old_folder(tmp_path, monkeypatch):
    def failing(first, second):
        raise OSError(errno.EIO, "I/O error", str(first))

    monkeypatch.setattr(folders, "_exchange", failing)
    staging = make_folder(tmp_path / ".cache.building", NEW)
    target = make_folder(tmp_path / "cache", OLD)
    with pytest.raises(OSError, match="I/O error"):
        replace_folder(staging, target)
    assert contents(target) == OLD
    assert contents(staging) == NEW


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "_exchange", lambda first, second: False)
    rename, calls = os.rename, []

    def failing_second(source, destination):
        calls.append(source)
        if len(calls) == 2:  # staging -> target: the old folder is aside by now
            raise OSError(errno.ENOSPC, "No space left on device")
        rename(source, destination)

    monkeypatch.setattr(folders.os, "rename", failing_second)
    staging = make_folder(tmp_path / ".cache.building", NEW)
    target = make_folder(tmp_path / "cache", OLD)
    with pytest.raises(OSError, match="No space"):
        replace_folder(staging, target)
    assert contents(target) == OLD
    assert contents(staging) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache.building", "cache"]  # nothing left aside


def test_a_failed_swap_of_a_rebuilt_teacher_cache_keeps_the_previous_cache(tmp_path, monkeypatch):
    import numpy as np
    from datasets import Dataset

    from distilnlp.teacher_cache import build
    from distilnlp.teacher_cache.load import TeacherCache

    datasets = {"train": Dataset.from_dict({"input_ids": [[1, 5, 2], [1, 6, 7, 2]]})}
    key = build.CacheKey(teacher="t", tokenizer="k", max_length=8, top_k=None)

    def write(value: float):
        logits = {"train": np.full((2, 3), value, np.float32)}
        return build.write_cache(tmp_path / "cache", datasets, logits, key, {"num_labels": 3}, "torch")

    first = write(1.0)
    before = contents(tmp_path / "cache")

    def failing(staging, target):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(build, "replace_folder", failing)
    with pytest.raises(OSError, match="I/O error"):
        write(2.0)
    assert contents(tmp_path / "cache") == before
    assert TeacherCache.load(tmp_path / "cache").metadata == first.metadata
    monkeypatch.undo()
    second = write(2.0)  # and with the real swap, the rebuilt cache replaces it
    assert second.metadata["splits"]["train"]["content"] != first.metadata["splits"]["train"]["content"]
    assert TeacherCache.load(tmp_path / "cache").metadata == second.metadata
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache.old")]
