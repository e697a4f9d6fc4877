"""Two-process data-parallel distillation on CPU equals one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(*arguments: str) -> list[str]:
    """`accelerate launch` with two CPU processes (gloo) on a free port, then `arguments`."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *arguments,
    ]


def run(command: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["none", "token_dropout"])
def test_two_process_ddp_matches_one_process(tmp_path, augmentation):
    script = str(HERE / "ddp_distill.py")
    single = run(
        [sys.executable, script, str(tmp_path / "single.json"), "8", augmentation], tmp_path / "single.json"
    )
    launch = accelerate_launch(script, str(tmp_path / "ddp.json"), "4", augmentation)
    ddp = run(launch, tmp_path / "ddp.json")
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert len(ddp["losses"]) == len(single["losses"]) == 6
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-4)
    assert ddp["checksum"] == pytest.approx(single["checksum"], rel=1e-5)
