"""The import layers of pyproject.toml's [tool.importlinter] hold: commands on top; then the ONNX exporter, the
benchmark and the distillation modules; then the teacher cache; then the task data; then the foundations
(checkpoints, run lock, file names, presets, distributed helpers, metrics). Nothing imports upward, imports inside
functions included, and no sibling modules or packages import each other in a cycle.

`lint-imports` runs in a subprocess on this checkout's `distilnlp` (PYTHONPATH), without its cache."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).parent.parent
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_contracts_cover_every_module_and_forbid_cycles():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "distilnlp"
    types = {contract["type"]: contract for contract in config["contracts"]}
    assert types["layers"]["exhaustive"] is True  # a new module must be given a layer
    assert types["acyclic_siblings"]["ancestors"] == ["distilnlp"]
    assert not any(contract.get("ignore_imports") for contract in config["contracts"])


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    """The contract is not vacuous: data importing the trainer (function-level, as the old cycles hid) fails."""
    shutil.copytree(ROOT / "distilnlp", tmp_path / "distilnlp", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    task = tmp_path / "distilnlp" / "data" / "task.py"
    task.write_text(
        task.read_text() + "\n\ndef _upward():\n    from ..distill.trainer import DistillationTrainer\n\n"
        "    return DistillationTrainer\n"
    )
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "distilnlp.data is not allowed to import distilnlp.distill:" in result.stdout
    assert "distilnlp.data.task -> distilnlp.distill.trainer" in result.stdout
