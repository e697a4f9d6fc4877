"""Every script in benchmarks/ still imports against the package (a moved or renamed name fails here, in CI,
instead of on the next person who runs a 40-minute benchmark)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


def test_there_are_benchmark_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_script_imports(script, monkeypatch):
    assert 'if __name__ == "__main__":' in script.read_text(), f"{script.name} runs on import"
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/x.py` runs it: siblings import
    name = f"benchmark_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)  # top-level imports and definitions only
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
