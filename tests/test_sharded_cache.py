"""Teacher cache built across processes: each `accelerate launch` process runs the teacher over its slice of
the rows, process 0 writes the cache, and the result equals a one-process build."""

import sys
import threading

import numpy as np
import pytest
import torch
from tiny import tiny_pair, token_dataset

from distilnlp.teacher_cache import LOGITS, TOPK_LOGITS, TeacherCache, TeacherCacheError, build_teacher_cache
from distilnlp.teacher_cache import build as build_module
from distilnlp.teacher_cache.shards import merge_shards, save_shard, slice_bounds


def test_slices_cover_every_row_once_in_order_and_differ_by_at_most_one():
    for rows in range(12):
        for world in range(1, 5):
            bounds = [slice_bounds(rows, world, rank) for rank in range(world)]
            assert [i for start, stop in bounds for i in range(start, stop)] == list(range(rows))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def build_in_threads(monkeypatch, world, *args, fail_rank=None, **kwargs):
    """`build_teacher_cache` as `world` processes would run it: one thread per rank, a shared barrier."""
    barrier, local = threading.Barrier(world, timeout=120), threading.local()
    monkeypatch.setattr(build_module, "process_group", lambda: (local.rank, world, barrier.wait))
    compute = build_module.compute_teacher_logits

    def failing(*a, **k):
        if local.rank == fail_rank:
            raise RuntimeError("killed")
        return compute(*a, **k)

    monkeypatch.setattr(build_module, "compute_teacher_logits", failing)
    results, errors = [None] * world, []

    def work(rank):
        local.rank = rank
        try:
            results[rank] = build_teacher_cache(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 (reported below, after every thread ended)
            errors.append(error)
            barrier.abort()  # like `accelerate launch`, stop the other processes

    threads = [threading.Thread(target=work, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def splits():
    # 7 rows over 3 processes: slices of 3, 2, 2; 2 rows: the third process's slice is empty.
    return {"train": token_dataset(7, seed=1, min_len=3, max_len=20), "validation": token_dataset(2, seed=2)}


@pytest.mark.parametrize("setup", ["single", "ensemble", "top_k"])
def test_three_process_build_equals_one_process_build(tmp_path, monkeypatch, setup):
    teachers = [tiny_pair(seed=3)[0], tiny_pair(seed=4)[0]] if setup == "ensemble" else tiny_pair(seed=3)[0]
    top_k = 2 if setup == "top_k" else None
    one = build_teacher_cache(tmp_path / "one", teachers, splits(), batch_size=2, top_k=top_k)
    results, errors = build_in_threads(
        monkeypatch, 3, tmp_path / "three", teachers, splits(), batch_size=2, top_k=top_k
    )
    assert not errors, errors
    three = TeacherCache.load(tmp_path / "three")
    assert all(r.fingerprint == three.fingerprint == one.fingerprint for r in results)
    assert (one.metadata["processes"], three.metadata["processes"]) == (1, 3)
    assert three.num_teachers == one.num_teachers and three.num_labels == one.num_labels
    three.check(teachers, top_k=top_k)  # the same key check the trainer makes
    column = TOPK_LOGITS if top_k else LOGITS
    for name in ("train", "validation"):
        assert three.metadata["splits"][name]["inputs"] == one.metadata["splits"][name]["inputs"]
        assert three.metadata["splits"][name]["rows"] == one.metadata["splits"][name]["rows"]
        assert three.metadata["splits"][name]["topk_mass"] == one.metadata["splits"][name]["topk_mass"]
        np.testing.assert_allclose(
            np.asarray(three.logits(name)[column]), np.asarray(one.logits(name)[column]), rtol=0, atol=1e-6
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "three"]  # no staging folder left


def test_a_build_killed_in_one_process_leaves_no_cache_that_loads(tmp_path, monkeypatch):
    teacher = tiny_pair(seed=3)[0]
    _, errors = build_in_threads(monkeypatch, 2, tmp_path / "cache", teacher, splits(), fail_rank=1)
    assert errors
    assert not (tmp_path / "cache").exists()
    with pytest.raises(TeacherCacheError, match="not a teacher cache"):
        TeacherCache.load(tmp_path / "cache")


def test_merge_rejects_a_missing_shard_and_a_process_that_saw_other_data(tmp_path):
    logits = {"train": np.ones((2, 3), np.float32)}
    record = {
        "fingerprint": "a",
        "splits": {"train": {"start": 0, "rows": 2, "seconds": 1.0, "fp32_reruns": 0}},
    }
    save_shard(tmp_path, 0, 2, logits, record)
    with pytest.raises(TeacherCacheError, match="Process 1 of 2 left no shard"):
        merge_shards(tmp_path, 2, {"train": 3}, "a")
    later = {
        "fingerprint": "b",
        "splits": {"train": {"start": 2, "rows": 1, "seconds": 2.0, "fp32_reruns": 0}},
    }
    save_shard(tmp_path, 1, 2, {"train": np.zeros((1, 3), np.float32)}, later)
    with pytest.raises(TeacherCacheError, match=r"Processes \[1\] built the cache from other data"):
        merge_shards(tmp_path, 2, {"train": 3}, "a")
    save_shard(tmp_path, 1, 2, {"train": np.zeros((1, 3), np.float32)}, later | {"fingerprint": "a"})
    merged, details = merge_shards(tmp_path, 2, {"train": 3}, "a")
    np.testing.assert_array_equal(merged["train"], [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    assert details["train"] == {"seconds": 2.0, "fp32_reruns": 0}
    with pytest.raises(TeacherCacheError, match="does not hold its rows"):
        merge_shards(tmp_path, 2, {"train": 4}, "a")


# ---------------------------------------------------------------------------------------- multi-process


@pytest.mark.slow
def test_two_process_cache_build_under_accelerate_launch_equals_one_process_build(tmp_path):
    from sharded_cache_build import splits as script_splits
    from sharded_cache_build import teachers as script_teachers
    from test_ddp import HERE, accelerate_launch, run

    script = str(HERE / "sharded_cache_build.py")
    single = run([sys.executable, script, str(tmp_path / "one")], tmp_path / "one" / "result.json")
    double = run(accelerate_launch(script, str(tmp_path / "two")), tmp_path / "two" / "result.json")
    assert (single["world_size"], double["world_size"]) == (1, 2)
    assert single["fingerprints"] == double["fingerprints"]  # every process returned the same cache

    first, second = script_teachers()
    data = script_splits()
    for name, teacher in (("single", first), ("ensemble", [first, second]), ("trainer", first)):
        one, two = TeacherCache.load(tmp_path / "one" / name), TeacherCache.load(tmp_path / "two" / name)
        assert (one.metadata["processes"], two.metadata["processes"]) == (1, 2)
        assert two.fingerprint == one.fingerprint
        two.check(teacher, top_k=None)  # accepted by the same key check as the one-process cache
        for split, dataset in data.items():
            assert two.split_for(dataset) == one.split_for(dataset) == split  # same rows, same order
            got, want = np.asarray(two.logits(split)[LOGITS]), np.asarray(one.logits(split)[LOGITS])
            assert got.shape == want.shape == (len(dataset), 3 * (2 if name == "ensemble" else 1))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        # Row order against the teacher itself, one row at a time.
        models = [first, second] if name == "ensemble" else [first]
        with torch.no_grad():
            direct = [
                torch.cat([m.eval()(input_ids=torch.tensor([row["input_ids"]])).logits[0] for m in models])
                for row in data["train"]
            ]
        np.testing.assert_allclose(np.asarray(two.logits("train")[LOGITS]), torch.stack(direct), atol=1e-5)
    assert not [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_cache_teacher_command_under_accelerate_launch_equals_one_process(tmp_path):
    import os
    import subprocess

    from test_ddp import HERE, accelerate_launch
    from tiny import save_tiny_model, write_topic_csv

    from distilnlp.commands.cli import main

    teacher = save_tiny_model(tmp_path / "teacher", num_labels=3)
    data = write_topic_csv(tmp_path / "topics.csv", n=41)  # 33 training rows: slices of unequal length

    def argv(cache):
        return ["cache-teacher", "--teacher", str(teacher), "--dataset", str(data), "--max_length", "16",
                "--teacher_cache", str(cache), "--teacher_cache_batch_size", "4", "--output_dir",
                str(tmp_path / "out"), "--use_cpu", "true", "--report_to", "none"]  # fmt: skip

    assert main(argv(tmp_path / "one")) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = accelerate_launch("-m", "distilnlp", *argv(tmp_path / "two"))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    one, two = TeacherCache.load(tmp_path / "one"), TeacherCache.load(tmp_path / "two")
    assert (one.metadata["processes"], two.metadata["processes"]) == (1, 2)
    assert two.fingerprint == one.fingerprint  # same teacher, tokenizer and inputs (row order included)
    two.check(teacher, top_k=None)
    assert two.metadata["splits"]["train"]["rows"] == 33  # 17 + 16 rows
    for split in ("train", "validation"):
        np.testing.assert_allclose(
            np.asarray(two.logits(split)[LOGITS]), np.asarray(one.logits(split)[LOGITS]), rtol=0, atol=1e-6
        )
